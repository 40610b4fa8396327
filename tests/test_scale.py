"""The models trained from a backed h5ad (perturbdiff.backed.BackedPerturbData) against the same data in memory.

The backed container gives the same cells, genes, split and scale, bit for bit; the control statistics
differ by float32 rounding (the in-memory path scales each value before averaging, the streamed one
after) and so do pseudobulk means (summation order). A model fitted on either therefore ends with
weights that agree to a small relative tolerance, not bit for bit; these tests bound that difference
and check that fit, predict and save/load work end to end on backed data. (Doloris also exercises the streamed
pseudobulk product
`M @ X` of its PCA node features; Unlasting, marked slow, the GRN branch.)
"""
import warnings

import numpy as np
import pytest

from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.backed import BackedPerturbData
from perturbdiff.modelfile import ControlReference
from perturbdiff.scale import predict_to_h5ad

KEYS = dict(cell_type_key='cell_type', mode_key='perturbation_type')
TINY = dict(steps=10, mask_steps=4, hidden=32, time_dim=16, decoder=(32,), grn_dim=8, pca_dim=4, mask_hidden=16,
            n_control=10, sampling_steps=5, batch_size=32)


@pytest.fixture(scope='module')
def splits(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sim = simulate(seed=3, n_genes=50, n_regulators=5, n_single=8, n_combo=3, cells_per_group=20, n_control=80,
                       n_cell_types=2)
    path = tmp_path_factory.mktemp('scale') / 'sim.h5ad'
    from perturbdiff.backed import _plain_strings
    sim.obs, sim.var = _plain_strings(sim.obs), _plain_strings(sim.var)  # pandas 3's string arrays: anndata refuses
                                                                         # them
    del sim.uns['simulation']
    sim.write_h5ad(path)
    mem = PerturbData(sim, **KEYS).split('unseen_perturbation', seed=0, n_top_genes=30)
    bk = BackedPerturbData(path, **KEYS).split('unseen_perturbation', seed=0, n_top_genes=30)
    return mem, bk


def _rel(a: dict, b: dict) -> float:
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in keys) ** 0.5
    return num / sum(float((b[k] ** 2).sum()) for k in keys) ** 0.5


@pytest.mark.parametrize('family', ['doloris', pytest.param('unlasting', marks=pytest.mark.slow)])
def test_ddib_model_from_backed_data(splits, family, tmp_path):
    from perturbdiff.models import Doloris, Unlasting
    cls = dict(doloris=Doloris, unlasting=Unlasting)[family]
    (mem, bk) = splits
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        m_mem = cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY).fit(mem.train)
        m_bk = cls.from_preset('quick', seed=0, device='cpu', progress=False, **TINY).fit(bk.train)
    rel = _rel(m_bk.net_.state_dict(), m_mem.net_.state_dict())
    print(f"{family}: relative L2 weight difference backed vs in memory after {TINY['steps']} steps: {rel:.1e}")
    assert rel < 1e-5  # observed ~2e-8
    pred = m_bk.predict(bk.test, seed=0)
    assert pred.n_obs == bk.test.n_cells and np.isfinite(pred.X).all()
    m_bk.save(tmp_path / 'model')
    again = cls.load(tmp_path / 'model', device='cpu')
    assert isinstance(again.train_, ControlReference)  # the controls, in memory: the h5ad is not needed any more
    assert np.array_equal(again.predict(bk.test, seed=0).X, pred.X)
    predict_to_h5ad(again, bk.test, tmp_path / 'pred.h5ad', seed=0, groups_per_chunk=1000)  # one chunk: = predict
    import anndata as ad
    assert np.array_equal(ad.read_h5ad(tmp_path / 'pred.h5ad').X.toarray(), pred.X)


def test_scale_train_takes_the_cli_data_keys():
    """`python -m perturbdiff.scale train` reads the data with the same keys as `perturbdiff` (one list, in cli): the
    expression space and the combination separator included."""
    from perturbdiff.api import DATA_KEYS
    from perturbdiff.scale import _parser
    args = _parser().parse_args(['train', '--data', 'x.h5ad', '--model', 'control', '--out', 'o', '--sep', '_',
                                 '--space', 'log1p'])
    assert {'sep', 'space'} <= set(DATA_KEYS)
    assert (args.sep, args.space) == ('_', 'log1p')


def test_perturbdiff_scale_is_the_same_command():
    """`perturbdiff scale train ...` and `python -m perturbdiff.scale train ...` are one parser definition
    (`scale.add_commands`): the same options, values and handler."""
    from perturbdiff.cli import build_parser
    from perturbdiff.scale import _parser, run_train
    argv = ['train', '--data', 'x.h5ad', '--model', 'doloris', '--out', 'o', '--sep', '_', '--set', 'steps=3',
            '--test-frac', '0.5']
    a, b = vars(_parser().parse_args(argv)), vars(build_parser().parse_args(['scale', *argv]))
    assert a['func'] is b['func'] is run_train
    same = lambda d, skip: {k: v for k, v in d.items() if k not in skip}
    assert same(b, ('command', 'scale_command', 'traceback')) == same(a, ('command',))
    assert (a['command'], b['command'], b['scale_command']) == ('train', 'scale', 'train')
    # --traceback counts wherever it is given: the subcommand's flag must not reset the top-level one
    assert build_parser().parse_args(['--traceback', 'scale', *argv]).traceback is True
    assert build_parser().parse_args(['scale', *argv, '--traceback']).traceback is True
    assert build_parser().parse_args(['scale', *argv]).traceback is False
    assert _parser().parse_args([*argv, '--traceback']).traceback is True


def test_scale_errors_in_one_line(tmp_path, capsys):
    """`python -m perturbdiff.scale` reports an input or system error in one line with exit status 2, as `perturbdiff`
    does (`--traceback` shows the whole traceback instead)."""
    from perturbdiff.scale import main
    argv = ['train', '--data', str(tmp_path / 'missing.h5ad'), '--model', 'control', '--out', str(tmp_path / 'o'),
            '--device', 'cpu']
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('python -m perturbdiff.scale train: error:') and '\n' not in err and 'missing.h5ad' in err, (
        err
    )
    with pytest.raises(OSError):
        main(argv + ['--traceback'])


def test_split_by_a_column_backed_equals_in_memory(tmp_path):
    """`split_by` (CPA's split column, `scale train --split-key`) on a backed h5ad: the same parts and scale as in
    memory (on all genes: with n_top_genes the backed selection, from streamed moments, picked other genes at the
    cutoff here)."""
    from perturbdiff.backed import _plain_strings
    from perturbdiff.scale import main as scale_main
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sim = simulate(seed=5, n_genes=30, n_regulators=3, n_single=5, n_combo=2, cells_per_group=10, n_control=40)
    sim.obs['split'] = np.random.default_rng(0).choice(['train', 'test', 'ood'], sim.n_obs, p=[0.7, 0.2, 0.1])
    sim.obs, sim.var = _plain_strings(sim.obs), _plain_strings(sim.var)
    del sim.uns['simulation']
    path = tmp_path / 'sim.h5ad'
    sim.write_h5ad(path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mem = PerturbData(sim, **KEYS).split_by('split')
        bk = BackedPerturbData(path, **KEYS).split_by('split')
    assert list(bk.train.obs.index) == list(mem.train.obs.index) and list(bk.test.obs.index) == list(mem.test.obs.index)
    assert list(bk.train.genes) == list(mem.train.genes) and np.isclose(bk.train.x_max, mem.train.x_max)
    assert bk.test_groups.subgroup.equals(mem.test_groups.subgroup)
    argv = ['train', '--data', path, '--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type', '--split-key',
            'split', '--model', 'mean', '--out', tmp_path / 'run', '--quiet', '--threads', '1']
    assert scale_main([str(a) for a in argv]) == 0
    import json
    info = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert sorted(info['test_groups']['group']) == sorted(mem.test_groups.index)


def test_drug_tasks_split_backed_equals_in_memory(tmp_path):
    """The papers' sci-Plex3 split (`drug_tasks`: OOD drugs everywhere plus unseen contexts, issue 16) on a backed
    h5ad: the same cells in each part and the same task labels as in memory."""
    from perturbdiff.backed import _plain_strings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sim = simulate(kind='drug', seed=0, n_drugs=6, n_genes=30, n_cell_types=2, cells_per_group=6, n_control=30)
    sim.obs, sim.var = _plain_strings(sim.obs), _plain_strings(sim.var)
    sim.uns.pop('simulation', None)
    path = tmp_path / 'drugs.h5ad'
    sim.write_h5ad(path)
    keys = dict(cell_type_key='cell_type', dose_key='dose', kind='drug')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        mem = PerturbData(sim, **keys).split('drug_tasks', test_frac=0.3, seed=0)
        bk = BackedPerturbData(path, **keys).split('drug_tasks', test_frac=0.3, seed=0)
    assert list(bk.train.obs.index) == list(mem.train.obs.index) and list(bk.test.obs.index) == list(mem.test.obs.index)
    assert bk.test_groups.subgroup.equals(mem.test_groups.subgroup)
    assert set(mem.test_groups.subgroup) == {'ood_drug', 'unseen_context'}
