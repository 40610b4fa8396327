"""Smoke tests of the experiment notebooks (nbs/2x_*.ipynb): each runs through papermill in quick mode
with the baselines on the data of this machine (the ../shared fixtures, else the simulator) and writes
its tables and figures; the Norman table equals the one `perturbdiff benchmark` writes.

The notebooks are not run by nbdev_test (their title cell carries nbdev's `skip_exec: true`
front matter); this file is where they run."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
EXPERIMENTS = sorted(p.stem for p in NBS.glob('2[0-9]_*.ipynb'))
PARAMETERS = {'data_path', 'quick', 'device', 'seed', 'out_dir', 'models', 'steps', 'sample_steps'}
BASELINES = ['control', 'mean', 'additive', 'linear']
FIGURES = {'metrics.png', 'violins.png', 'pca.png', 'activation.png', 'diversity.png'}


def execute(name: str, out_dir: Path, **params) -> Path:
    "Run nbs/<name>.ipynb with papermill (cwd = repo root, as the README's command) and return its output notebook."
    pm = pytest.importorskip('papermill')
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f'{name}.out.ipynb'
    pm.execute_notebook(str(NBS / f'{name}.ipynb'), str(out_nb), parameters=dict(quick=True, device='cpu',
                        out_dir=str(out_dir), **params), cwd=str(ROOT), kernel_name='python3', progress_bar=False)
    return out_nb


def images_shown(nb_path: Path) -> int:
    nb = json.loads(nb_path.read_text())
    return sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_notebook_layout(name):
    "First cell: the papermill parameters (tagged); title cell: nbdev's skip_exec front matter; no export."
    nb = json.loads((NBS / f'{name}.ipynb').read_text())
    first = nb['cells'][0]
    assert first['cell_type'] == 'code' and 'parameters' in first['metadata'].get('tags', [])
    assigned = {l.split('=')[0].strip() for l in ''.join(first['source']).splitlines() if '=' in l and not l.startswith(' ')}
    assert PARAMETERS <= assigned, PARAMETERS - assigned
    title = next(c for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert ''.join(title['source']).lstrip().startswith('# ') and '- skip_exec: true' in ''.join(title['source'])
    code = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
    assert '#| export' not in code and '#| default_exp' not in code
    imports = {l.split()[1].split('.')[0] for l in code.splitlines() if l.startswith(('import ', 'from '))}
    assert imports <= {'perturbdiff', 'pathlib', 'numpy', 'pandas', 'IPython'}, imports


def test_nbdev_test_skips_experiments(monkeypatch):
    "nbdev_test honours skip_exec: running it on an experiment notebook executes nothing."
    from nbdev.test import test_nb
    monkeypatch.chdir(ROOT); monkeypatch.setenv('IN_TEST', '1')  # test_nb sets IN_TEST; keep it out of other tests
    ok, seconds = test_nb(NBS / '21_norman.ipynb')
    assert ok and seconds == 0


def test_adamson(tmp_path, shared):
    out_nb = execute('20_adamson', tmp_path, data_path=str(shared / 'adamson_mini.h5ad'), models=','.join(BASELINES))
    res = pd.read_csv(tmp_path / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES and res.group.nunique() == 2  # 25% of 10 knockdowns (rounded)
    assert list(pd.read_csv(tmp_path / 'summary.csv', index_col=0).index) == BASELINES
    assert FIGURES <= {p.name for p in tmp_path.glob('*.png')} and images_shown(out_nb) == len(FIGURES)


def test_adamson_synthetic(tmp_path):
    "The same notebook on the simulator (no ../shared needed)."
    execute('20_adamson', tmp_path, data_path='synthetic', models='control,additive')
    assert list(pd.read_csv(tmp_path / 'summary.csv', index_col=0).index) == ['control', 'additive']


def test_norman_same_table_as_cli(tmp_path, shared):
    "The README's papermill command (baselines here) and `perturbdiff benchmark` write the same tables."
    from perturbdiff.cli import main
    data = str(shared / 'perturbench_devel.h5ad')
    out_nb = execute('21_norman', tmp_path / 'nb', data_path=data, models=','.join(BASELINES))
    res = pd.read_csv(tmp_path / 'nb' / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES and res.group.nunique() == 15
    assert set(res.subgroup) == {'seen0', 'seen1', 'seen2'}
    assert (tmp_path / 'nb' / 'summary_by_subgroup.csv').exists() and (tmp_path / 'nb' / 'diversity.csv').exists()
    assert FIGURES <= {p.name for p in (tmp_path / 'nb').glob('*.png')} and images_shown(out_nb) == len(FIGURES)
    assert main(['benchmark', '--data', data, '--subset', 'dataset=norman19', '--cell-type-key', 'cell_type', '--mode',
                 'CRISPRa', '--split', 'unseen_combo', '--test-frac', '1', '--models', ','.join(BASELINES),
                 '--out', str(tmp_path / 'cli'), '--quiet']) == 0
    for f in ('results.csv', 'summary.csv', 'summary_by_subgroup.csv'):
        assert (tmp_path / 'nb' / f).read_bytes() == (tmp_path / 'cli' / f).read_bytes(), f


def test_sciplex3_synthetic(tmp_path):
    out_nb = execute('22_sciplex3', tmp_path, data_path='synthetic-drug', models='control,mean,additive')
    summary = pd.read_csv(tmp_path / 'summary.csv', index_col=[0, 1])
    assert list(summary.index.get_level_values('task').unique()) == ['unseen_context', 'ood_drug']
    for task in ('unseen_context', 'ood_drug'):
        res = pd.read_csv(tmp_path / task / 'results.csv')
        assert list(pd.unique(res.model)) == ['control', 'mean', 'additive'] and res.group.nunique() > 0
    ood = pd.read_csv(tmp_path / 'ood_drug' / 'results.csv')
    ctx = pd.read_csv(tmp_path / 'unseen_context' / 'results.csv')
    assert ood.groupby('condition').group.nunique().min() == 8  # a held-out drug: every cell type x dose (2 x 4)
    assert ctx.condition.nunique() > 1
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert {'metrics_unseen_context.png', 'metrics_ood_drug.png', 'violins.png', 'pca.png'} <= pngs
    assert images_shown(out_nb) >= 6
