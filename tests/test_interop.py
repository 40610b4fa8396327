"""Issue 19: predictions in the input's conventions, and other tools' prediction files evaluated without conversion.

Ensembl-indexed input (gene symbols in a var column, as CELLxGENE and CPA files have them): the prediction keeps the
input's var_names and .var, so `ad.concat([truth, pred])` keeps every gene. GEARS writes its predictions with the
condition labels of its data ('A+ctrl', 'A+B') and the symbols in var['gene_name']; CPA keeps the input's obs columns
(condition, cell type, dose); neither has our group ids. Both are scored as our own file would be."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from perturbdiff.baselines import AdditiveBaseline, MeanBaseline
from perturbdiff.data import GROUP_COL, PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.metrics import evaluate

warnings.filterwarnings('ignore', category=UserWarning)


@pytest.fixture(scope='module')
def ensembl():
    "The simulator with Ensembl-like var_names and the symbols in var['gene_symbols'], GEARS-style labels."
    sim = simulate(seed=3, n_genes=50, n_single=6, n_combo=3, cells_per_group=15, n_control=60, n_cell_types=1)
    sim.var['gene_symbols'] = sim.var_names.astype(str)
    sim.var['chromosome'] = [f'chr{i % 22 + 1}' for i in range(sim.n_vars)]
    sim.var_names = [f'ENSG{i:011d}' for i in range(sim.n_vars)]
    labels = sim.obs['condition'].astype(str)
    sim.obs['condition'] = np.where(labels.str.contains(r'\+') | (labels == 'control'), labels, labels + '+ctrl')
    data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')
    split = data.split('unseen_combo', test_frac=1.0, seed=0)
    return sim, split, AdditiveBaseline().fit(split.train).predict(split.test, seed=0)


def test_prediction_in_the_inputs_conventions(ensembl):
    sim, split, pred = ensembl
    train = split.train
    assert list(pred.var_names) == list(sim.var_names[sim.var['gene_symbols'].isin(train.genes)])  # Ensembl ids
    assert list(pred.var['gene_symbols']) == list(train.genes) and 'chromosome' in pred.var
    assert pred.obs_names.is_unique and pred.obs_names[0] == 'additive-0' and pred.obs['predicted'].all()
    other = MeanBaseline().fit(train).predict(split.test, seed=0)
    assert not set(pred.obs_names) & set(other.obs_names)  # two models' cells can be concatenated
    assert set(pred.obs['condition']) <= set(sim.obs['condition'])  # the input's labels ('A+B', not a key)
    truth = sim[sim.obs['condition'].isin(set(pred.obs['condition']))].copy()
    both = ad.concat([truth, pred], join='inner')
    assert both.n_vars == pred.n_vars == train.n_genes  # every predicted gene kept, none lost to a name mismatch
    assert both.n_obs == truth.n_obs + pred.n_obs


def test_gears_and_cpa_files_are_evaluated_without_conversion(ensembl):
    sim, split, pred = ensembl
    train, test = split
    ours = evaluate(pred, test, train)
    X = np.asarray(pred.X)
    # GEARS: its own var_names, the symbols in var['gene_name'] in another order, labels 'A+ctrl' / 'ctrl+A'
    order = np.random.default_rng(0).permutation(pred.n_vars)
    gears_labels = [c if '+' in c and 'ctrl' not in c else 'ctrl+' + c.split('+')[0]
                    for c in pred.obs['condition'].astype(str)]
    gears = ad.AnnData(X[:, order], obs=pd.DataFrame({'condition': gears_labels}),
                       var=pd.DataFrame({'gene_name': np.asarray(train.genes)[order]},
                                        index=[f'g{i}' for i in range(pred.n_vars)]))
    pd.testing.assert_frame_equal(evaluate(gears, test, train), ours)
    # CPA: the input's obs columns (condition, cell type), the input's var (Ensembl ids), no group ids
    cpa = ad.AnnData(X, obs=pred.obs[['condition', 'cell_type']].reset_index(drop=True).astype(str),
                     var=pred.var.copy())
    cpa.obs.index = cpa.obs.index.astype(str)
    assert GROUP_COL not in cpa.obs
    pd.testing.assert_frame_equal(evaluate(cpa, test, train), ours)


def test_foreign_file_errors_name_the_fix(ensembl):
    sim, split, pred = ensembl
    train, test = split
    noname = ad.AnnData(np.asarray(pred.X), var=pd.DataFrame(index=[f'x{i}' for i in range(pred.n_vars)]),
                        obs=pd.DataFrame({'condition': pred.obs['condition'].astype(str).to_numpy()}))
    with pytest.raises(ValueError, match="var_names: 50 missing.*input's gene ids: 50 missing"):
        evaluate(noname, test, train)


def test_cpa_split_column_through_the_cli(ensembl, tmp_path):
    "`--split-key split` (CPA's column: train / test / ood) splits as the file says; the benchmark runs on that split."
    from perturbdiff.cli import main
    sim, _, _ = ensembl
    sim = sim.copy()
    labels = sim.obs['condition'].astype(str)
    combos = labels.str.contains(r'\+') & ~labels.str.endswith('+ctrl')
    rng = np.random.default_rng(1)
    sim.obs['split'] = np.where(combos, 'ood', rng.choice(['train', 'test', 'val'], sim.n_obs, p=[0.8, 0.1, 0.1]))
    path = tmp_path / 'cpa.h5ad'
    sim.write_h5ad(path)
    args = ['--data', path, '--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type', '--split-key', 'split']
    assert main(['benchmark', *args, '--models', 'mean,additive', '--out', tmp_path / 'b', '--quiet']) == 0
    res = pd.read_csv(tmp_path / 'b' / 'results.csv')
    ctrl = (labels == 'control').to_numpy()
    want = sim.obs[np.isin(sim.obs['split'], ['test', 'ood']) & ~ctrl]
    assert res.n_true.sum() == 2 * len(want)  # every test and ood cell, for both models, and no other
    assert 'seen' in set(res.subgroup) and set(res.subgroup) <= {'seen', 'unseen', 'seen0', 'seen1', 'seen2'}
    with pytest.raises(SystemExit) as e:  # two ways of naming the test part: refused in one line
        main(['benchmark', *args, '--test', 'X', '--models', 'mean', '--out', tmp_path / 'c', '--quiet'])
    assert e.value.code == 2
