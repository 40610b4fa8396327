"""Kill test (issue #14): `perturbdiff fit` and `perturbdiff benchmark` run as subprocesses on a tiny simulated screen,
are killed with SIGKILL at seeded points -- in the denoiser phase, in Doloris' and Unlasting's mask phase before and
after its first checkpoint, while the tables and the model folder are written, and after seeded random delays -- and
are resumed with --resume, several times over on the same --out. After every kill, each output present is readable
(json loads, csv parses, h5ad opens, checkpoints and the saved model load), equals what the uninterrupted run ends
with, and nothing present after an earlier kill has gone; after the last resume, the predictions (X arrays) and
results.csv are bit-identical to an uninterrupted run with the same seed.

Kill points are found by polling the output folder (a file created or replaced since the run started), so the kill
lands a fraction of a millisecond after the event. Temporary files (`.name.part-PID.ext`) that a SIGKILL leaves, and
parts of the model folder that its manifest does not name yet, are not outputs: they are not opened here, and they must
not stop a resume (a test below)."""
import fnmatch
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from perturbdiff import cli
from perturbdiff.contract import PerturbationModel

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name('perturbdiff')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'NUMBA_CACHE_DIR': str(ROOT / '.numba_cache')}

DATA = ['--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type', '--device', 'cpu', '--seed', '0', '--quiet']
# tiny 'plain' networks (the quick presets have no mask model); 30 denoiser steps (a checkpoint every 3); 120 mask
# steps (checkpoints at 50, 100 and 120), so the mask phase has a checkpoint to resume from
DDIB = dict(steps=30, time_dim=8, hidden=16, decoder='[16]', grn_dim=4, mask_steps=120, mask_hidden=8, n_control=10,
            sampling_steps=5)
FIT = ['fit', '--model', 'doloris', '--preset', 'plain', *DATA, *(a for k, v in {**DDIB, 'pca_dim': 4}.items()
                                                                  for a in ('--set', f'{k}={v}'))]
BENCH = ['benchmark', '--models', 'mean,unlasting', '--preset', 'plain', '--n-cells', '5', *DATA,
         *(a for k, v in DDIB.items() for a in ('--set', f'unlasting.{k}={v}'))]
# outputs that, once written, must never go missing
FINAL = ('run.json', 'results.csv', 'summary.csv', 'summary.txt', 'summary_by_subgroup.csv', 'timing.csv',
         'predictions/*.h5ad', 'model/model.json', 'checkpoints/*last.pt')


MAIN = 'import sys; from perturbdiff.cli import main; sys.exit(main())'


def command(*args, hook: str = '') -> list[str]:
    "The console script; or its entry point through this interpreter, after `hook` (code run first in the process)."
    if SCRIPT.exists() and not hook: return [str(SCRIPT), *map(str, args)]
    return [sys.executable, '-c', f'{hook}\n{MAIN}', *map(str, args)]


def is_temporary(rel: str) -> bool:
    """A temporary file of an atomic write (`.name.part-PID.ext`, `last.pt.part-PID`) or a probe; or a part of the model
    folder (`state-*.json`, `tensors-*.pt`), which is read through the manifest that names it (model/model.json)."""
    name = rel.rsplit('/', 1)[-1]
    return name.startswith('.') or '.part' in name or rel.startswith(('model/state-', 'model/tensors-'))


def snapshot(out: Path) -> dict[str, tuple]:
    "Every file under `out`: relative path -> (inode, mtime, size); a replaced or appended file gets a new key."
    found = {}
    for root, _, names in os.walk(out):
        for n in names:
            p = os.path.join(root, n)
            try: st = os.stat(p)
            except FileNotFoundError: continue  # renamed or removed meanwhile
            found[os.path.relpath(p, out).replace(os.sep, '/')] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


@dataclass
class Kill:
    "SIGKILL `delay` seconds after a file matching `pattern` is created or changed (None: after the start)."
    pattern: str | None
    delay: float = 0.0
    where: str = ''
    must_land: bool = True  # False for windows of milliseconds, which a busy machine may miss (the run then finishes)


def run(argv, out: Path, kill: Kill | None = None, hook: str = '', timeout: float = 600) -> str:
    """Run the CLI with `--out out`; SIGKILL it at `kill` (or `hook` kills it). 'killed', or 'finished' (exit code 0
    asserted)."""
    before, fired, t0 = snapshot(out), None, time.monotonic()
    with tempfile.TemporaryFile('w+') as err:
        p = subprocess.Popen(command(*argv, '--out', out, hook=hook), stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        while kill is not None and p.poll() is None:
            now = time.monotonic()
            if fired is None and (kill.pattern is None or any(
                    fnmatch.fnmatch(k, kill.pattern) and v != before.get(k) for k, v in snapshot(out).items())):
                fired = t0 if kill.pattern is None else now
            if fired is not None and now - fired >= kill.delay:
                os.kill(p.pid, signal.SIGKILL); break
            if now - t0 > timeout: p.kill(); pytest.fail(f'{argv[0]} ran past {timeout} s')
            time.sleep(0.0005)
        code = p.wait(timeout=timeout)
        err.seek(0); stderr = err.read()
    if code == -signal.SIGKILL: return 'killed'
    assert code == 0, f'{argv[0]} {"--resume " if "--resume" in argv else ""}exit {code}: {stderr}'
    assert kill is None or not kill.must_land, f'{argv[0]} finished before the kill point ({kill.where})'
    return 'finished'


def weights(model) -> dict:
    "Every trained tensor of a model: its network and, for the DDIB models, its mask network."
    nets = {'net': model.net_, **({'mask': model.mask_.net} if getattr(model, 'mask_', None) is not None else {})}
    return {f'{n}.{k}': v for n, net in nets.items() for k, v in net.state_dict().items()}


def read_outputs(out: Path) -> dict:
    "Open every output under `out` (temporary files aside); any unreadable one fails the test, naming it."
    found = {}
    for rel in sorted(snapshot(out)):
        if is_temporary(rel): continue
        p = out / rel
        try:
            if rel == 'model/model.json': found[rel] = weights(PerturbationModel.load(p.parent, device='cpu'))
            elif p.suffix == '.json': found[rel] = json.loads(p.read_text())
            elif p.suffix == '.csv': found[rel] = pd.read_csv(p, float_precision='round_trip')
            elif p.suffix == '.h5ad': found[rel] = ad.read_h5ad(p)
            elif p.suffix == '.pt': found[rel] = torch.load(p, map_location='cpu', weights_only=True)['step']
            elif p.suffix == '.txt':
                found[rel] = p.read_text(); assert '±' in found[rel], 'a table without numbers'
            else: raise AssertionError('an unexpected file')
        except Exception as e:
            pytest.fail(f'{rel} is unreadable after a kill: {type(e).__name__}: {e}')
    return found


def final(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, f) for f in FINAL)


def same_h5ad(a: ad.AnnData, b: ad.AnnData) -> bool:
    return (a.X.dtype == b.X.dtype and np.array_equal(a.X, b.X) and a.obs.equals(b.obs)
            and list(a.var_names) == list(b.var_names))


def rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    return table[table.model == model].reset_index(drop=True)


def check_after_kill(out: Path, ref: dict, earlier: dict) -> dict:
    """Every output readable; each one that is final equals the uninterrupted run's; no final output of an earlier
    kill gone, no checkpoint gone back. Returns the outputs, for the next kill."""
    now = read_outputs(out)
    lost = sorted(r for r in earlier if final(r) and r not in now)
    assert not lost, f'outputs present after an earlier kill are gone: {lost}'
    for rel, val in now.items():
        if rel.endswith('.h5ad'): assert same_h5ad(val, ref[rel]), f'{rel} differs from the uninterrupted run'
        elif rel in ('results.csv', 'timing.csv'):
            assert set(val.model) <= set(ref[rel].model), rel
            if rel == 'results.csv':
                for m in set(val.model):
                    pd.testing.assert_frame_equal(rows(val, m), rows(ref[rel], m), check_exact=True)
        elif rel == 'model/model.json':
            assert all(torch.equal(v, ref[rel][k]) for k, v in val.items()), f'{rel} differs'
        elif rel.endswith('.pt'):
            assert val <= ref[rel] and val >= earlier.get(rel,
                                                          0), (f'{rel}: step {val} (earlier {earlier.get(rel)}, end '
                                                               f'{ref[rel]})')
        elif rel.startswith('summary') and rel.endswith('.csv'):  # one row per model (and subgroup), as in the end
            key = list(val.columns[:2 if rel == 'summary_by_subgroup.csv' else 1])
            got, want = val.set_index(key), ref[rel].set_index(key)
            pd.testing.assert_frame_equal(got, want.loc[got.index], check_exact=True, obj=rel)
        elif rel == 'run.json':
            assert val['split'] == ref[rel]['split'] and val['args']['seed'] == ref[rel]['args']['seed']
    if 'results.csv' in now:
        assert set(earlier.get('results.csv', pd.DataFrame(columns=['model'])).model) <= set(now['results.csv'].model)
    return now


def predict(run_dir: Path, dest: Path) -> ad.AnnData:
    "Predictions of the model that `fit` saved in `run_dir` (`perturbdiff predict`, in this process)."
    assert cli.main(['predict', '--run', str(run_dir), '--out', str(dest), '--n-cells', '5', '--device', 'cpu',
                     '--quiet']) == 0
    return ad.read_h5ad(dest)


def logs(out: Path) -> dict:
    "The training logs without their wall-clock column."
    return {p.relative_to(out).as_posix(): pd.read_csv(p).drop(columns='seconds') for p in sorted(out.rglob('log.csv'))}


@pytest.fixture(scope='module')
def ref(tmp_path_factory, tiny_h5ad) -> dict:
    """The uninterrupted fit and benchmark runs on the tiny screen (conftest): their outputs, logs, predictions and
    durations."""
    d = tmp_path_factory.mktemp('kill')
    refs = dict(dir=d, data=['--data', str(tiny_h5ad)])
    for name, argv in (('fit', FIT), ('benchmark', BENCH)):
        t0 = time.monotonic()
        assert run([*argv, *refs['data']], d / name) == 'finished'
        refs[name] = dict(out=d / name, seconds=time.monotonic() - t0, files=read_outputs(d / name),
                          logs=logs(d / name))
    refs['fit']['pred'] = predict(d / 'fit', d / 'fit_pred.h5ad')
    return refs


def known_defect(out: Path) -> str | None:
    "A defect a kill exposed: an empty (unreadable) log. Fixed; kept so that a random kill names it if it returns."
    files = snapshot(out)
    empty = [r for r, (_, _, size) in files.items() if r.endswith('log.csv') and size == 0]
    if empty: return f'{empty} left empty (unreadable as CSV)'
    return None


def kill_and_resume(argv, out: Path, kills: list[Kill], ref: dict) -> list[str]:
    """Run, kill at kills[0]; resume, kill at kills[1]; ...; checking the outputs after each kill; then resume to the
    end."""
    outcomes, earlier = [], {}
    for i, k in enumerate(kills):
        outcomes.append(f"{k.where}: {run([*argv, *(['--resume'] if i else [])], out, k)}")
        defect = known_defect(out)
        if defect: pytest.fail(f'after the kill at {k.where}: {defect}')
        earlier = check_after_kill(out, ref['files'], earlier)
    assert run([*argv, '--resume'], out) == 'finished'
    return outcomes


def assert_same_benchmark(out: Path, ref: dict) -> None:
    "results.csv, summary.csv and every predictions file bit-identical to the uninterrupted run; the same logs."
    for f in ('results.csv', 'summary.csv'):
        assert (out / f).read_bytes() == (ref['out'] / f).read_bytes(), f
    preds = sorted(p.name for p in (out / 'predictions').iterdir() if not is_temporary(p.name))  # no stale model
    assert preds == sorted(p.name for p in (ref['out'] / 'predictions').iterdir()) == ['mean.h5ad', 'unlasting.h5ad']
    for name in preds:
        got, want = ad.read_h5ad(out / 'predictions' / name), ref['files'][f'predictions/{name}']
        assert np.array_equal(got.X, want.X) and same_h5ad(got, want), name
    assert list(pd.read_csv(out / 'timing.csv').model) == ['mean', 'unlasting']
    got = logs(out)
    assert got.keys() == ref['logs'].keys()
    for k, want in ref['logs'].items(): pd.testing.assert_frame_equal(got[k], want, check_exact=True)


def assert_same_fit(out: Path, ref: dict, tmp_path: Path) -> None:
    "The saved model with the uninterrupted run's weights, bit-identical predictions, the same logs (no step twice)."
    got, want = weights(PerturbationModel.load(out / 'model', device='cpu')), ref['files']['model/model.json']
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    pred = predict(out, tmp_path / 'pred.h5ad')
    assert np.array_equal(pred.X, ref['pred'].X) and same_h5ad(pred, ref['pred'])
    got = logs(out)
    assert got.keys() == ref['logs'].keys() == {'checkpoints/denoiser/log.csv', 'checkpoints/mask/log.csv'}
    for k, want in ref['logs'].items(): pd.testing.assert_frame_equal(got[k], want, check_exact=True)


def rng(test: int) -> np.random.Generator:
    "The random parts of the kill points of one test (seeded per test: the same points however the tests are picked)."
    return np.random.default_rng([14, test])


def test_fit_killed_in_each_phase_then_resumed(ref, tmp_path):
    "Doloris: killed in the denoiser phase, twice in the mask phase and while the model is saved; resumed each time."
    r = rng(1)
    kills = [Kill('checkpoints/denoiser/last.pt', float(r.uniform(0, 0.3)), 'denoiser phase'),
             Kill('checkpoints/mask/log.csv', float(r.uniform(0.01, 0.05)), 'mask phase, before its first checkpoint'),
             Kill('checkpoints/mask/last.pt', 0, 'mask phase, just after a checkpoint'),
             Kill('model/tensors-*.pt', 0, 'while the model is saved (weights written, manifest not yet)',
                  must_land=False)]
    print(kill_and_resume([*FIT, *ref['data']], tmp_path / 'run', kills, ref['fit']))
    assert_same_fit(tmp_path / 'run', ref['fit'], tmp_path)


def test_fit_killed_at_random_times_then_resumed(ref, tmp_path):
    "Two kills after seeded random delays (anywhere from start-up to the end of the uninterrupted run's time)."
    kills = [Kill(None, float(t), f'after {t:.2f} s',
                  must_land=False) for t in rng(2).uniform(1, ref['fit']['seconds'], 2)]
    print(kill_and_resume([*FIT, *ref['data']], tmp_path / 'run', kills, ref['fit']))
    assert_same_fit(tmp_path / 'run', ref['fit'], tmp_path)


def test_benchmark_killed_in_each_phase_then_resumed(ref, tmp_path):
    """mean, then Unlasting: killed while the first tables are written, in Unlasting's mask phase before and after its
    first checkpoint, and between its predictions file and the tables (the final writes); resumed each time."""
    r = rng(3)
    kills = [Kill('results.csv', 0, 'writing the tables of mean'),
             Kill('checkpoints/unlasting/mask/log.csv', float(r.uniform(0.01, 0.05)),
                  'Unlasting mask phase, before its first checkpoint'),
             Kill('checkpoints/unlasting/mask/last.pt', float(r.uniform(0, 0.05)),
                  'Unlasting mask phase, after a checkpoint'),
             Kill('predictions/unlasting.h5ad', 0, 'the final writes: predictions written, tables not yet',
                  must_land=False)]
    print(kill_and_resume([*BENCH, *ref['data']], tmp_path / 'run', kills, ref['benchmark']))
    assert_same_benchmark(tmp_path / 'run', ref['benchmark'])


def test_benchmark_killed_at_random_times_then_resumed(ref, tmp_path):
    kills = [Kill(None, float(t), f'after {t:.2f} s',
                  must_land=False) for t in rng(4).uniform(1, ref['benchmark']['seconds'], 2)]
    print(kill_and_resume([*BENCH, *ref['data']], tmp_path / 'run', kills, ref['benchmark']))
    assert_same_benchmark(tmp_path / 'run', ref['benchmark'])


# --- defects: a SIGKILL at an exact point, from inside the process (a hook run before the CLI's main) -------------

KILL_WHILE_WRITING_PREDICTIONS = """
import os, signal, anndata
from pathlib import Path
_write = anndata.AnnData.write_h5ad
def write_h5ad(self, filename=None, *a, **k):
    _write(self, filename, *a, **k)
    p = Path(filename)
    if p.parent.name == 'predictions':  # the first predictions file: killed with half of it written
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]); os.kill(os.getpid(), signal.SIGKILL)
anndata.AnnData.write_h5ad = write_h5ad
"""

KILL_WHEN_A_LOG_IS_CREATED = """
import csv, os, signal
csv.DictWriter.writeheader = lambda self: os.kill(os.getpid(), signal.SIGKILL)  # log.csv opened, nothing written yet
"""


def test_benchmark_resumes_after_a_kill_while_writing_predictions(ref, tmp_path):
    """A SIGKILL while predictions/<model>.h5ad is written leaves the temporary predictions/.<model>.part-<pid>.h5ad;
    --resume must not take it for a model's results (it did: "also holds results of ['.mean.part-...']")."""
    out = tmp_path / 'run'
    assert run([*BENCH, *ref['data']], out, hook=KILL_WHILE_WRITING_PREDICTIONS) == 'killed'
    left = os.listdir(out / 'predictions')
    assert len(left) == 1 and left[0].startswith('.mean.part-')  # only mean's half-written temporary file
    check_after_kill(out, ref['benchmark']['files'], {})
    assert run([*BENCH, *ref['data'], '--resume'], out) == 'finished'
    assert_same_benchmark(out, ref['benchmark'])


def test_fit_killed_as_a_log_is_created_leaves_it_readable(ref, tmp_path):
    """Killed as the first log row is due: the log is created atomically with its header and row, so it is absent or
    readable (it was created empty by open(path, 'a') and filled only on close: EmptyDataError)."""
    out = tmp_path / 'run'
    assert run([*FIT, *ref['data']], out, hook=KILL_WHEN_A_LOG_IS_CREATED) == 'killed'
    log = out / 'checkpoints' / 'denoiser' / 'log.csv'
    assert not log.exists() or len(pd.read_csv(log)) >= 1
    check_after_kill(out, ref['fit']['files'], {})
    assert run([*FIT, *ref['data'], '--resume'], out) == 'finished'
    assert_same_fit(out, ref['fit'], tmp_path)
