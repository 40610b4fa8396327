"""The `perturbdiff` console script end to end, in subprocesses: benchmark on the Norman part of
perturbench's devel file and on the simulator, bad input (exit 2 with a one-line reason), and a
fit -> predict -> evaluate round trip that reproduces the benchmark's rows of that model."""
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

BASELINES = ['control', 'mean', 'additive', 'linear']
SCRIPT = Path(sys.executable).with_name('perturbdiff')


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    if not SCRIPT.exists():
        pytest.fail(f'console script {SCRIPT} missing: run `pip install --no-deps -e .` in the repository')
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope='module')
def norman_args(shared):
    return ['--data', shared / 'perturbench_devel.h5ad', '--subset', 'dataset=norman19', '--cell-type-key', 'cell_type',
            '--mode', 'CRISPRa', '--split', 'unseen_combo', '--test-frac', '1']


@pytest.fixture(scope='module')
def norman_bench(norman_args, tmp_path_factory):
    out = tmp_path_factory.mktemp('norman_bench')
    p = run('benchmark', *norman_args, '--models', ','.join(BASELINES), '--out', out)
    assert p.returncode == 0, p.stderr
    return out, p


def test_benchmark_norman(norman_bench):
    out, p = norman_bench
    res = pd.read_csv(out / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES
    assert len(res) == 15 * len(BASELINES) and res.groupby('model').group.nunique().eq(15).all()  # 15 pairs x 4 models
    assert set(res.subgroup) == {'seen0', 'seen1', 'seen2'}
    summary = pd.read_csv(out / 'summary.csv', index_col=0)
    assert list(summary.index) == BASELINES
    assert [c for c in summary.columns if c != 'n_groups'][:4] == ['edist_all_mean', 'edist_all_std', 'emd_all_mean',
                                                                    'emd_all_std']
    assert summary.edist_de20_mean.dtype == float and (summary.n_groups == 15).all()  # numbers, not 'mean ± std'
    assert (out / 'summary.txt').read_text().count('±') > 4 * 10  # the papers' table beside it
    assert (out / 'summary_by_subgroup.csv').exists() and (out / 'timing.csv').exists() and (out / 'run.json').exists()
    for m in BASELINES:
        pred = ad.read_h5ad(out / 'predictions' / f'{m}.h5ad')
        assert pred.n_obs == 1480 and pred.n_vars == 500 and pred.uns['perturbdiff']['model'] == m
    assert 'benchmark' in p.stderr  # the progress bar (stderr)


def test_benchmark_same_as_python(norman_bench, shared, tmp_path):
    "The CLI table equals the one `perturbdiff.api.benchmark` makes in Python for the same split and seed."
    from perturbdiff.api import benchmark, load_data, make_split
    data = load_data(shared / 'perturbench_devel.h5ad', subset=['dataset=norman19'], cell_type_key='cell_type',
                     mode='CRISPRa')
    benchmark(make_split(data, 'unseen_combo', test_frac=1.0), BASELINES,
              progress=False).write(tmp_path, predictions=False)
    out, _ = norman_bench
    for f in ('results.csv', 'summary.csv', 'summary_by_subgroup.csv'):
        assert (tmp_path / f).read_bytes() == (out / f).read_bytes(), f


@pytest.mark.parametrize('extra, reason', [
    (['--cell-type-key', 'celltype'], "Cell-type column 'celltype' is not in adata.obs"),
    (['--models', 'control,unknown_model'], "Unknown model 'unknown_model'"),
    (['--split', 'custom', '--test', 'NOPE+GENE'], "Unknown test condition 'NOPE+GENE'"),
    (['--split', 'no_such_split'], "invalid choice: 'no_such_split'"),  # argparse's errors are one line too
    (['--set', 'stesp=1'], "No model run has the option 'stesp'"),  # a typo is not dropped for the baselines
    (['--n-top-genes', '0'], 'argument --n-top-genes: expected an integer >= 1, got 0'),  # not "all genes"
    (['--test-frac', '1', '--split', 'unseen_perturbation', '--models', 'mean'],
     'The training split has no perturbed cells'),
])
def test_bad_input(norman_args, tmp_path, extra, reason):
    p = run('benchmark', *norman_args, '--models', 'control', '--out', tmp_path, '--quiet', *extra)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and lines[0].startswith('perturbdiff'), p.stderr
    assert not (tmp_path / 'results.csv').exists()


def test_missing_file(tmp_path):
    p = run('benchmark', '--data', tmp_path / 'nope.h5ad', '--models', 'control', '--out', tmp_path)
    assert p.returncode == 2 and 'neither an h5ad file nor a known dataset' in p.stderr


def test_fit_predict_evaluate(norman_args, norman_bench, tmp_path):
    "fit -> predict -> evaluate with a baseline reproduces the benchmark's rows of that model."
    run_dir = tmp_path / 'additive'
    p = run('fit', *norman_args, '--model', 'additive', '--out', run_dir, '--quiet')
    assert p.returncode == 0, p.stderr
    assert (run_dir / 'model' / 'model.json').exists() and (run_dir / 'run.json').exists()
    p = run('predict', '--run', run_dir, '--out', run_dir / 'pred.h5ad', '--quiet', cwd=tmp_path)  # another cwd
    assert p.returncode == 0, p.stderr
    p = run('evaluate', '--run', run_dir, '--pred', run_dir / 'pred.h5ad', '--out', run_dir / 'eval', '--quiet')
    assert p.returncode == 0, p.stderr
    ev = pd.read_csv(run_dir / 'eval' / 'results.csv')
    bench = pd.read_csv(norman_bench[0] / 'results.csv')
    pd.testing.assert_frame_equal(ev, bench[bench.model == 'additive'].reset_index(drop=True))


def test_synthetic_readme_job(tmp_path):
    "The README's offline job, with the baselines: the simulator, default split."
    p = run('benchmark', '--data', 'synthetic', '--models', ','.join(BASELINES), '--out', tmp_path / 'synthetic',
            '--quiet')
    assert p.returncode == 0, p.stderr
    res = pd.read_csv(tmp_path / 'synthetic' / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES and res.cell_type.nunique() == 2



def test_edist_conventions(tmp_path):
    """--edist picks the convention of the edist columns; the metric edist_authors adds the authors' code's beside them
    (issue 16: both conventions in one table)."""
    out = {}
    for conv in ('paper', 'authors_code'):
        p = run('benchmark', '--data', 'synthetic', '--models', 'control', '--metrics', 'edist,edist_authors',
                '--edist', conv, '--out', tmp_path / conv, '--quiet')
        assert p.returncode == 0, p.stderr
        out[conv] = pd.read_csv(tmp_path / conv / 'results.csv')
    a, b = out['paper'], out['authors_code']
    assert np.allclose(b.edist_all, b.edist_authors_all) and np.allclose(a.edist_authors_all, b.edist_authors_all)
    assert not np.allclose(a.edist_all, b.edist_all)
    p = run('benchmark', '--data', 'synthetic', '--models', 'control', '--edist', 'sqrt', '--out', tmp_path / 'x')
    assert p.returncode == 2 and "invalid choice: 'sqrt'" in p.stderr

def test_help():
    p = run('--help')
    assert p.returncode == 0 and all(c in p.stdout for c in ('benchmark', 'fit', 'predict', 'evaluate'))
    p = run('benchmark', '--help')
    for opt in ('--data', '--condition-key', '--control', '--cell-type-key', '--dose-key', '--smiles-key', '--subset',
                '--n-top-genes', '--split', '--test', '--test-file', '--models', '--preset', '--set', '--device',
                '--seed', '--out'):
        assert opt in p.stdout, opt


def test_gene_graph_files(tmp_path):
    """Issue 16: the papers' graph ingredients from a user's files, on the command line: a GRN edge list
    (--gene-graph) and gene vectors (--gene-embeddings, e.g. scGPT's) join co-expression in the trained model's
    graph."""
    from perturbdiff.cli import main
    from perturbdiff.datasets import simulate
    from perturbdiff.models import Departures
    sim = simulate(seed=0, n_genes=30, n_regulators=3, n_single=4, n_combo=0, n_cell_types=1, cells_per_group=10,
                   n_control=40)
    sim.write_h5ad(tmp_path / 'screen.h5ad')
    sim.uns['simulation']['edges'].to_csv(tmp_path / 'grn.csv', index=False)
    genes = list(sim.var_names)
    vec = np.zeros((len(genes), 2)); vec[:10, 0] = 1; vec[10:, 1] = 1  # two blocks of genes with identical vectors
    np.savez(tmp_path / 'genes.npz', names=np.array(genes), vectors=vec)
    keys = ['--data', tmp_path / 'screen.h5ad', '--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type',
            '--split', 'unseen_perturbation', '--model', 'departures', '--set', 'steps=2', '--set', 'dim=4',
            '--set', 'time_dim=8', '--device', 'cpu', '--quiet']
    n = {}
    for name, extra in (('grn', ['--gene-graph', tmp_path / 'grn.csv']),
                        ('both', ['--gene-graph', tmp_path / 'grn.csv', '--gene-embeddings', tmp_path / 'genes.npz'])):
        assert main(['fit', *keys, *extra, '--out', tmp_path / name]) == 0
        n[name] = Departures.load(tmp_path / name / 'model', device='cpu').graph_.n_edges
    assert n['both'] > n['grn'] > 0
    with pytest.raises(SystemExit) as e:
        main(['fit', *keys, '--gene-graph', tmp_path / 'nope.csv', '--out', tmp_path / 'x'])
    assert e.value.code == 2
