"""Another separator between the targets of a combination (issue 15, item 3): labels written `A_B` with `sep='_'`
(CLI `--sep _`) give exactly the keys, splits and predictions of the same data written `A+B`."""
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from perturbdiff.api import benchmark, load_data, make_split
from perturbdiff.datasets import simulate

SCRIPT = Path(sys.executable).with_name('perturbdiff')
KEYS = dict(cell_type_key='cell_type', mode_key='perturbation_type')


@pytest.fixture(scope='module')
def screens():
    "The simulator's pairs screen twice: labels with '+', and the same labels with '_'."
    plus = simulate(seed=0, n_genes=60, n_regulators=4, n_single=6, n_combo=6, cells_per_group=15, n_control=60,
                    n_cell_types=1, combos_of='singles')
    under = plus.copy()
    under.obs['condition'] = under.obs['condition'].astype(str).str.replace('+', '_', regex=False)
    assert (under.obs.condition.str.contains('_')).any() and not under.obs.condition.str.contains(r'\+').any()
    return plus, under


def test_underscore_labels_give_the_same_benchmark(screens):
    plus, under = screens
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dp, du = load_data(plus, **KEYS), load_data(under, sep='_', **KEYS)
    assert dp.conditions == du.conditions and sum('+' in c for c in du.conditions) == 6
    sp, su = (make_split(d, 'unseen_combo', test_frac=0.5, seed=0) for d in (dp, du))
    assert sp.test.conditions == su.test.conditions
    rp, ru = (benchmark(s, models=['additive', 'anchor', 'linear'], progress=False,
                        device='cpu').results for s in (sp, su))
    num = rp.select_dtypes('number').columns
    pd.testing.assert_frame_equal(rp[num].reset_index(drop=True), ru[num].reset_index(drop=True))
    assert all(len(du.perturbation(c).targets) == 2 for c in su.test.conditions)  # each pair is two targets


def test_cli_sep_option(screens, tmp_path):
    _, under = screens
    path = tmp_path / 'under.h5ad'
    under.write_h5ad(path)
    args = ['benchmark', '--data', path, '--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type',
            '--split', 'unseen_combo', '--test-frac', '0.5', '--models', 'additive']
    p = subprocess.run([str(SCRIPT), *map(str, args), '--sep', '_', '--out', tmp_path / 'sep'], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    res = pd.read_csv(tmp_path / 'sep' / 'results.csv')
    assert len(res) == 3 and res.condition.str.contains(r'\+').all()  # three held-out pairs, keys joined with '+'
    p = subprocess.run([str(SCRIPT), *map(str, args), '--out', tmp_path / 'nosep'], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and 'combinations' in p.stderr  # without --sep the labels are single targets: no pairs
