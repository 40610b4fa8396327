"""PerturbData beyond the notebook's examples: every split kind leaks nothing, on simulated and real data."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from perturbdiff.contract import resolve_groups
from perturbdiff.data import SPLITS, PerturbData
from perturbdiff.train import cell_loader
from perturbdiff.datasets import simulate


@pytest.fixture(scope='module')
def gene_sim():
    return simulate(n_genes=80, n_single=10, n_combo=8, cells_per_group=12, n_control=40, mode='mixed', seed=5)


@pytest.fixture(scope='module')
def drug_sim():
    return simulate(kind='drug', n_genes=60, n_drugs=8, cells_per_group=6, n_control=30, n_cell_types=3, seed=6)


def gene_data(sim):
    return PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')


def drug_data(sim):
    return PerturbData(sim, cell_type_key='cell_type', dose_key='dose', smiles_key='SMILES')


def assert_no_leak(split, same_conditions_allowed):
    tr, te = split.train, split.test
    assert set(tr.obs.group).isdisjoint(te.obs.group), 'a test group has training cells'
    assert not te.obs.control.any(), 'control cells must train'
    assert list(tr.genes) == list(te.genes) and tr.x_max == te.x_max
    assert set(tr.obs_names if hasattr(tr, 'obs_names') else tr.obs.index).isdisjoint(te.obs.index)
    if not same_conditions_allowed:
        assert set(tr.conditions).isdisjoint(te.conditions), 'a held-out condition trains in another context'


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_gene_splits_leak_nothing(gene_sim, seed):
    data = gene_data(gene_sim)
    n_ctrl = int(data.obs.control.sum())
    for kind, kw, same in [('unseen_perturbation', {}, False), ('unseen_combo', dict(single_test_frac=0.3), False),
                           ('unseen_context', dict(test_frac=0.3), True)]:
        s = data.split(kind, seed=seed, **kw)
        assert_no_leak(s, same)
        assert int(s.train.obs.control.sum()) == n_ctrl
        assert s.train.n_cells + s.test.n_cells == data.n_cells
        again = data.split(kind, seed=seed, **kw)
        assert list(again.test_groups.index) == list(s.test_groups.index), 'not reproducible'


def test_unseen_combo_subgroups(gene_sim):
    s = gene_data(gene_sim).split('unseen_combo', test_frac=1.0, single_test_frac=0.4, seed=0)
    singles = {c for c in s.train.conditions if '+' not in c}
    for cond, sub in zip(s.test_groups.condition, s.test_groups.subgroup):
        if '+' in cond: assert sub == f"seen{sum(t in singles for t in cond.split('+'))}"
        else: assert sub == 'unseen' and cond not in singles
    assert all('+' not in c for c in s.train.conditions)


def test_drug_splits(drug_sim):
    data = drug_data(drug_sim)
    ctx = data.split('unseen_context', test_frac=0.25, seed=0)
    assert_no_leak(ctx, True)
    assert set(ctx.test.conditions) <= set(ctx.train.conditions)
    ood = data.split('ood_drug', test=['drug01', 'drug03'])
    assert_no_leak(ood, False)
    assert ood.test.conditions == ['drug01', 'drug03']
    assert len(ood.test_groups) == 2 * 3 * 4  # 2 drugs x 3 cell types x 4 doses
    rand = data.split('ood_drug', test_frac=0.25, seed=2)
    assert len(rand.test.conditions) == 2
    cu = data.split('custom', test=[('drug02', 'type1', 100.0), 'drug05,type2'])
    assert sorted(cu.test_groups.index) == ['drug02|type1|100.0', 'drug05|type2|10.0', 'drug05|type2|100.0',
                                            'drug05|type2|1000.0', 'drug05|type2|10000.0']
    with pytest.raises(ValueError, match='has no dose 3.0'):
        data.split('custom', test=[('drug02', 'type1', 3.0)])


def test_hvg_on_training_cells_only(gene_sim):
    "Rewriting every test cell leaves the gene set and scale unchanged; the HVGs differ from all-cell HVGs."
    data = gene_data(gene_sim)
    s1 = data.split('unseen_perturbation', seed=0, n_top_genes=30)
    mod = gene_sim.copy()
    test = mod.obs.condition.isin(s1.test.conditions).to_numpy()
    X = mod.X.toarray()
    X[test] = np.random.default_rng(0).permutation(X[test].ravel()).reshape(X[test].shape) * 3
    mod.X = sp.csr_matrix(X)
    s2 = gene_data(mod).split('unseen_perturbation', seed=0, n_top_genes=30)
    assert list(s1.train.genes) == list(s2.train.genes) and s1.train.x_max == s2.train.x_max
    assert set(data.measured_targets) <= set(s1.train.genes)
    everyone = data.select_genes(30, keep_targets=False)
    train_only = data.select_genes(30, cells=~test, keep_targets=False)
    assert set(everyone.genes) != set(gene_data(mod).select_genes(30, keep_targets=False).genes)
    assert set(train_only.genes) == set(gene_data(mod).select_genes(30, cells=~test, keep_targets=False).genes)


def test_counts_input_not_mutated(gene_sim):
    a = gene_sim.copy()
    a.X = a.layers['counts'].copy()
    before = a.X.copy()
    data = PerturbData(a, cell_type_key='cell_type', mode_key='perturbation_type')
    assert (a.X != before).nnz == 0, "the caller's counts were modified"
    assert data.input_space == 'counts'
    np.testing.assert_allclose(data.dense(), gene_sim.X.toarray(), rtol=1e-5, atol=1e-6)


def test_layer_and_gene_symbols(shared):
    cpa = ad.read_h5ad(shared / 'norman_cpa_format_fixture.h5ad')
    data = PerturbData(cpa, layer='counts', mode='CRISPRa')
    assert data.input_space == 'counts' and data.genes[0] == 'RP4-633I8.4'  # var['feature_name'], not Ensembl
    assert data.resolve('ctrl+ETS2') == 'ETS2' and data.label_of['ETS2'] == 'ctrl+ETS2'


def test_real_splits(shared):
    pb = ad.read_h5ad(shared / 'perturbench_devel.h5ad')
    data = PerturbData(pb, cell_type_key='cell_type', mode_key='perturbation_type')
    for seed in range(3):
        assert_no_leak(data.split('unseen_perturbation', seed=seed), False)
        assert_no_leak(data.split('unseen_context', seed=seed), True)
    adamson = PerturbData(ad.read_h5ad(shared / 'adamson_mini.h5ad'), mode='CRISPRi')
    s = adamson.split('unseen_perturbation', test_frac=0.3, seed=0, n_top_genes=100)
    assert_no_leak(s, False)
    assert len(s.test.conditions) == 3 and set(adamson.targets) <= set(s.train.genes)


def test_bad_inputs(gene_sim):
    with pytest.raises(ValueError, match='Unknown split kind'):
        gene_data(gene_sim).split('random')
    with pytest.raises(ValueError, match='needs combinations'):
        gene_data(simulate(n_genes=30, n_combo=0, n_single=4, cells_per_group=5, n_control=10)).split('unseen_combo')
    a = gene_sim.copy()
    a.obs.loc[a.obs.index[0], 'cell_type'] = np.nan
    with pytest.raises(ValueError, match='missing values'):
        PerturbData(a, cell_type_key='cell_type')
    with pytest.raises(TypeError, match='Expected an AnnData'):
        PerturbData(pd.DataFrame())
    b = gene_sim.copy()
    b.var_names = ['G0000'] * 2 + list(b.var_names[2:])
    with pytest.raises(ValueError, match='occur more than once'):
        PerturbData(b)


def test_loader_and_groups(gene_sim):
    s = gene_data(gene_sim).split('unseen_perturbation', seed=0)
    batches = list(cell_loader(s.train, batch_size=50, seed=0))
    seen = np.concatenate([b['index'].numpy() for b in batches])
    assert sorted(seen) == list(range(s.train.n_cells))  # one epoch visits each cell once
    g = resolve_groups(s.test, s.train)
    assert (g.n_cells.to_numpy() == s.test.groups().loc[g.index, 'n_cells'].to_numpy()).all()
    assert set(SPLITS) == {'unseen_perturbation', 'unseen_combo', 'unseen_context', 'ood_drug', 'drug_tasks', 'custom'}
