"""Faults of the `perturbdiff` command line (issue #14), in-process through `perturbdiff.cli.main` on a tiny simulated
screen: every bad invocation ends with a non-zero exit code and one line on stderr that names the problem (no
traceback), while a genuine bug keeps its traceback; the baselines refuse conditions outside the data; options mean
what they say; outputs are checked before any work, written atomically, kept as each model finishes, and resumed
with --resume (baselines, and a trained model from its checkpoints)."""
import contextlib
import io
import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from perturbdiff import api, bridges, cli, datasets, ddib, mask, train
from perturbdiff.contract import PerturbationModel

DATA = ['--cell-type-key', 'cell_type', '--mode-key', 'perturbation_type']
SPLIT = ['--split', 'unseen_combo', '--test-frac', '1']


def run(*argv) -> tuple[int, str, str]:
    "main(argv) in-process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = cli.main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def ok(*argv) -> str:
    code, _, err = run(*argv)
    assert code == 0, err
    return err


@pytest.fixture(scope='module')
def files(tmp_path_factory, tiny_h5ad) -> dict:
    "The tiny gene screen (conftest), drug screens with and without SMILES, broken files and a fitted baseline run."
    d = tmp_path_factory.mktemp('faults_cli')
    drug = datasets.simulate(kind='drug', n_drugs=3, n_genes=30, n_cell_types=1, cells_per_group=5, n_control=20,
                             seed=0)
    drug.write_h5ad(d / 'drug.h5ad')
    del drug.obs['SMILES']; drug.write_h5ad(d / 'drug_nosmiles.h5ad')
    (d / 'broken.h5ad').write_bytes(tiny_h5ad.read_bytes()[:3000])
    (d / 'a_file').write_text('not a folder')
    (d / 'bad_dose.csv').write_text('G0004,type0,abc\n')
    run_dir = d / 'run'
    ok('fit', '--data', tiny_h5ad, *DATA, *SPLIT, '--model', 'additive', '--out', run_dir, '--quiet')
    bad_runs = {}
    manifest = json.loads((run_dir / 'model' / 'model.json').read_text())
    tensors = run_dir / 'model' / manifest['files']['tensors']
    foreign = json.dumps({**manifest, 'class': 'os:system'})
    for name, broken in [('empty', {'model.json': b''}), ('truncated', {tensors.name: tensors.read_bytes()[:200]}),
                         ('missing', None), ('pickle', {'model.json': None, 'model.pkl': b'\x80\x04K\x01.'}),
                         ('foreign', {'model.json': foreign.encode()})]:
        r = d / f'run_{name}'
        shutil.copytree(run_dir / 'model', r / 'model') if broken is not None else (r / 'model').mkdir(parents=True)
        (r / 'run.json').write_bytes((run_dir / 'run.json').read_bytes())
        for file, content in (broken or {}).items():
            (r / 'model' / file).unlink(missing_ok=True)
            if content is not None: (r / 'model' / file).write_bytes(content)
        bad_runs[name] = r
    r = d / 'run_badjson'; (r / 'model').mkdir(parents=True)
    (r / 'run.json').write_text((run_dir / 'run.json').read_text()[:50])
    bad_runs['badjson'] = r
    used = d / 'used'; used.mkdir(); (used / 'results.csv').write_text('model\nold\n')
    return dict(dir=d, tiny=str(tiny_h5ad), run=run_dir, used=used, **{f'run_{k}': v for k, v in bad_runs.items()})


def bench(f, *extra):
    return ['benchmark', '--data', f['tiny'], *DATA, '--models', 'control,mean', '--quiet', *extra]


def pred(f, o, *extra, run='run'):
    return ['predict', '--run', f[run], '--out', o / 'p.h5ad', '--quiet', *extra]


BAD = {  # name: (argv from the files, words the one line must hold)
    'no perturbed training cells': (lambda f, o: bench(f, '--split', 'unseen_perturbation', '--test-frac', '1', '--out',
                                                       o),
                                    'The training split has no perturbed cells'),
    'n-cells 0': (lambda f, o: bench(f, '--n-cells', '0', '--out', o),
                  'argument --n-cells: expected an integer >= 1, got 0'),
    'n-cells -1': (lambda f, o: bench(f, '--n-cells', '-1', '--out', o),
                   'argument --n-cells: expected an integer >= 1'),
    'n-top-genes 0': (lambda f, o: bench(f, '--n-top-genes', '0', '--out', o),
                      'argument --n-top-genes: expected an integer >= 1'),
    'n-top-genes -5': (lambda f, o: bench(f, '--n-top-genes', '-5', '--out', o), 'argument --n-top-genes'),
    'seed -1': (lambda f, o: bench(f, '--seed', '-1', '--out', o), 'argument --seed: expected an integer >= 0'),
    'test-frac 1.5': (lambda f, o: bench(f, '--test-frac', '1.5', '--out', o),
                      'argument --test-frac: expected a number in [0, 1]'),
    'steps=abc': (lambda f, o: bench(f, '--models', 'unlasting', '--set', 'steps=abc', '--out', o),
                  "unlasting option steps='abc': expected an integer"),
    'steps=2.5': (lambda f, o: bench(f, '--models', 'unlasting', '--set', 'steps=2.5', '--out', o),
                  'unlasting option steps=2.5: expected an integer'),
    'linear.n_dims=-3': (lambda f, o: bench(f, '--models', 'linear', '--set', 'linear.n_dims=-3', '--out', o),
                         'linear option n_dims=-3: must be >= 1'),
    'batch_size=0': (lambda f, o: bench(f, '--models', 'unlasting', '--set', 'batch_size=0', '--out', o),
                     'option batch_size=0: must be >= 1'),
    'sampling_steps=0': (lambda f, o: bench(f, '--models', 'departures', '--set', 'departures.sampling_steps=0',
                                            '--out', o),
                         'departures option sampling_steps=0: must be >= 1'),
    'n_steps (renamed)': (lambda f, o: bench(f, '--models', 'departures', '--set', 'departures.n_steps=5', '--out', o),
                          'n_steps is now sampling_steps'),
    'use_latent=maybe': (lambda f, o: bench(f, '--models', 'unlasting', '--set', 'use_latent=maybe', '--out', o),
                         'expected true or false'),
    'shared typo, baselines': (lambda f, o: bench(f, '--set', 'stesp=3', '--out', o),
                               "No model run has the option 'stesp'"),
    'mask_steps, departures only': (lambda f, o: ['fit', '--data', f['tiny'], *DATA, '--model', 'departures', '--set',
                                                  'mask_steps=3', '--out', o, '--quiet'],
                                    "No model run has the option 'mask_steps'"),
    'option of a model not run': (lambda f, o: bench(f, '--set', 'linear.n_dims=3', '--out', o),
                                  "'linear', which is not among the models run"),
    'dose abc': (lambda f, o: bench(f, '--split', 'custom', '--test', 'G0004,type0,abc', '--out', o),
                 "--test 'G0004,type0,abc': the dose 'abc' is not a number"),
    'dose abc in a test file': (lambda f, o: bench(f, '--split', 'custom', '--test-file', f['dir'] / 'bad_dose.csv',
                                                   '--out', o),
                                "line 1: 'G0004,type0,abc': the dose 'abc' is not a number"),
    'out is a file': (lambda f, o: bench(f, '--out', f['dir'] / 'a_file'), 'is a file, not a folder'),
    'out under a file': (lambda f, o: bench(f, '--out', f['dir'] / 'a_file' / 'sub'), 'cannot be written'),
    'out of an earlier run': (lambda f, o: bench(f, '--out', f['used']),
                              'already holds the outputs of an earlier run (results.csv)'),
    'resume and overwrite': (lambda f, o: bench(f, '--out', o, '--resume', '--overwrite'), 'not allowed with argument'),
    'fit into a fitted run': (lambda f, o: ['fit', '--data', f['tiny'], *DATA, *SPLIT, '--model', 'additive', '--out',
                                            f['run'], '--quiet'],
                              'pass --resume to continue it, --overwrite to replace it'),
    'truncated h5ad': (lambda f, o: bench(f, '--data', f['dir'] / 'broken.h5ad', '--out', o),
                       'could not be read as an h5ad file'),
    'drug data without SMILES': (lambda f, o: ['benchmark', '--data', f['dir'] / 'drug_nosmiles.h5ad',
                                               '--cell-type-key', 'cell_type',
                                               '--dose-key', 'dose', '--kind', 'drug', '--split', 'ood_drug',
                                               '--models', 'control,unlasting', '--out', o, '--quiet'],
                                 'unlasting encode drugs by their SMILES'),
    'drug doses pooled': (lambda f, o: ['benchmark', '--data', f['dir'] / 'drug.h5ad', '--cell-type-key', 'cell_type',
                                        '--smiles-key',
                                        'SMILES', '--kind', 'drug', '--models', 'control', '--out', o, '--quiet'],
                          '--dose-key dose'),
    'empty model.json': (lambda f, o: pred(f, o, run='run_empty'), 'cannot be read (JSONDecodeError'),
    'truncated model weights': (lambda f, o: pred(f, o, run='run_truncated'),
                                'is damaged, incomplete or from another version'),
    'missing model.json': (lambda f, o: pred(f, o, run='run_missing'), 'the fit of this run did not finish'),
    'model pickled by an older version': (lambda f, o: pred(f, o, run='run_pickle'),
                                          'Pickles are no longer loaded'),
    'model file naming a foreign class': (lambda f, o: pred(f, o, run='run_foreign'),
                                          "may only name classes of perturbdiff or torch.nn"),
    'truncated run.json': (lambda f, o: pred(f, o, run='run_badjson'), 'run.json is unreadable'),
    'baseline, unknown condition': (lambda f, o: pred(f, o, '--test', 'NOPE'),
                                    "Condition 'NOPE' is not in the data's vocabulary"),
    'baseline, typo': (lambda f, o: pred(f, o, '--test', 'G0004x'), "Did you mean 'G0004'"),
    'predict into a folder': (lambda f, o: pred(f, o, '--out', f['dir']), 'is a folder; give the path of a .h5ad file'),
    'predict into a csv': (lambda f, o: pred(f, o, '--out', o / 'p.csv'), 'must end in .h5ad'),
    'predict n-cells 0': (lambda f, o: pred(f, o, '--n-cells', '0'), 'argument --n-cells'),
    'evaluate a truncated h5ad': (lambda f, o: ['evaluate', '--run', f['run'], '--pred', f['dir'] / 'broken.h5ad',
                                                '--out', o, '--quiet'],
                                  'could not be read as an h5ad file'),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_invocation(files, tmp_path, case):
    "A non-zero exit, exactly one line on stderr (no traceback), naming the problem; nothing is written."
    make_argv, reason = BAD[case]
    code, _, err = run(*make_argv(files, tmp_path / 'out'))
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in err and lines[0].startswith('perturbdiff'), err
    assert reason in lines[0], lines[0]
    assert not (tmp_path / 'out' / 'results.csv').exists() and not (tmp_path / 'out' / 'p.h5ad').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_predict_device_is_honoured(files, tmp_path):
    "predict --device cuda on a CPU machine is refused (it was ignored)."
    code, _, err = run('predict', '--run', files['run'], '--device', 'cuda', '--out', tmp_path / 'p.h5ad', '--quiet')
    assert code == 2 and 'CUDA is not available' in err and len(err.strip().splitlines()) == 1, err


def test_predict_device_reaches_the_model(files, tmp_path, monkeypatch):
    seen = []
    load = PerturbationModel.load.__func__
    def recording(cls, path, device='auto'):
        seen.append(device); return load(cls, path, device)
    monkeypatch.setattr(PerturbationModel, 'load', classmethod(recording))
    ok('predict', '--run', files['run'], '--device', 'cpu', '--out', tmp_path / 'p.h5ad', '--quiet')
    assert seen == ['cpu']


def test_genuine_bug_keeps_its_traceback(files, tmp_path, monkeypatch):
    "An error raised inside a library (here numpy broadcasting) is a bug: main lets it through, not as a one-liner."
    def broken(*a, **k): return np.zeros(3) + np.zeros(4)
    monkeypatch.setattr(api, 'evaluate', broken)  # benchmark's, in perturbdiff.api
    with pytest.raises(ValueError, match='broadcast'):
        run(*bench(files, '--models', 'control', '--out', tmp_path / 'o'))


def test_traceback_flag_shows_user_errors(files, tmp_path):
    with pytest.raises(ValueError, match="No model run has the option 'stesp'"):
        run('--traceback', *bench(files, '--set', 'stesp=3', '--out', tmp_path / 'o'))


def test_options_are_typed_and_go_where_they_belong(files, tmp_path, monkeypatch):
    """--set use_latent=False is the boolean (the ablation happens); a shared option goes only to the models that have
    it."""
    # no training: the config is the test
    monkeypatch.setattr(cli.model_class('unlasting'), 'fit', lambda self, train, **kw: self)
    ok('fit', '--data', files['tiny'], *DATA, *SPLIT, '--model', 'unlasting', '--set', 'use_latent=False', '--set',
       'steps=3', '--out', tmp_path / 'u', '--quiet')
    config = cli.model_class('unlasting').load(tmp_path / 'u' / 'model', device='cpu').config
    assert config.use_latent is False and config.steps == 3
    per = api.model_overrides(['unlasting', 'departures', 'control'],
                              api.parse_overrides(['mask_steps=2', 'steps=3', 'keep_zeros=True']))
    assert per == {'unlasting': {'mask_steps': 2, 'steps': 3}, 'departures': {'steps': 3},
                   'control': {'keep_zeros': True}}
    assert api.make_model('departures', overrides={'*': {'mask_steps': 2, 'steps': 3}}).config.steps == 3


def test_test_group_with_a_comma(files, tmp_path):
    "A cell type holding a comma is named by quoting it in --test, or in a TSV --test-file."
    sim = datasets.simulate(n_genes=30, n_regulators=3, n_cell_types=2, n_single=4, n_combo=0, cells_per_group=8,
                            n_control=30, seed=2)
    sim.obs['cell_type'] = sim.obs['cell_type'].astype(str).map({'type0': 'type, a', 'type1': 'type b'})
    sim.write_h5ad(tmp_path / 'commas.h5ad')
    cond = sorted(set(sim.obs.condition[sim.obs.cell_type == 'type, a']) - {'ctrl', 'control'})[0]
    base = ['fit', '--data', tmp_path / 'commas.h5ad', *DATA, '--split', 'custom', '--model', 'control', '--quiet']
    ok(*base, '--test', f'{cond},"type, a"', '--out', tmp_path / 'r1')
    (tmp_path / 'groups.tsv').write_text(f'{cond}\ttype, a\n')
    ok(*base, '--test-file', tmp_path / 'groups.tsv', '--out', tmp_path / 'r2')
    for r in ('r1', 'r2'):
        assert json.loads((tmp_path / r / 'run.json').read_text())['split']['test_groups'] == [f'{cond}|type, a|']


def test_case_mismatch_hint(files, tmp_path):
    "Lower-case targets against upper-case gene symbols: a note says why every target is unmeasured."
    sim = ad.read_h5ad(files['tiny'])
    sim.obs['condition'] = sim.obs['condition'].astype(str).str.lower()
    sim.write_h5ad(tmp_path / 'lower.h5ad')
    err = ok('fit', '--data', tmp_path / 'lower.h5ad', *DATA, *SPLIT, '--model', 'control', '--out', tmp_path / 'r')
    assert 'only when case is ignored' in err and "target 'g0004', gene 'G0004'" in err, err


def test_backed_anndata_and_pooled_doses(files):
    backed = ad.read_h5ad(files['tiny'], backed='r')
    try:
        with pytest.raises(ValueError, match="backed"): api.load_data(backed, cell_type_key='cell_type')
    finally: backed.file.close()
    data = api.load_data(files['dir'] / 'drug.h5ad', cell_type_key='cell_type', smiles_key='SMILES', kind='drug',
                         dose_key='none')
    assert data.groups().dose.isna().all()


def test_out_checked_before_training(files, tmp_path, monkeypatch):
    "A bad --out fails before the data are read, so no fit is wasted."
    monkeypatch.setattr(cli, 'load_data', lambda *a, **k: pytest.fail('data read before --out was checked'))
    code, _, err = run('fit', '--data', files['tiny'], *DATA, '--model', 'unlasting', '--out', files['dir'] / 'a_file',
                       '--quiet')
    assert code == 2 and 'is a file' in err


def test_atomic_write_keeps_the_old_file(tmp_path):
    p = api.atomic_write(tmp_path / 'x.csv', lambda t: t.write_text('old'))
    def killed(t): t.write_text('half'); raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): api.atomic_write(p, killed)
    assert p.read_text() == 'old' and [q.name for q in tmp_path.iterdir()] == ['x.csv']


def test_predict_interrupted_mid_write(files, tmp_path, monkeypatch):
    "Killing predict while it writes leaves the earlier predictions whole."
    out = tmp_path / 'pred.h5ad'
    ok('predict', '--run', files['run'], '--out', out, '--quiet')
    before = out.read_bytes()
    def half(self, path, *a, **k):
        Path(path).write_bytes(before[:100]); raise KeyboardInterrupt
    monkeypatch.setattr(ad.AnnData, 'write_h5ad', half)
    code, _, err = run('predict', '--run', files['run'], '--seed', '1', '--out', out, '--quiet')
    assert code == 130 and 'interrupted' in err
    assert out.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ['pred.h5ad']
    monkeypatch.undo()
    assert ad.read_h5ad(out).n_obs > 0


def test_benchmark_interrupted_then_resumed(files, tmp_path, monkeypatch):
    """Stopped during a table write after two models: what finished is kept and whole; --resume fits only the rest,
    and the tables equal those of a run never stopped."""
    argv = [*bench(files, '--models', 'control,mean,linear'), *SPLIT]
    ok(*argv, '--out', tmp_path / 'fresh')
    writes, to_csv = [], pd.DataFrame.to_csv
    def flaky(self, path=None, *a, **k):
        if path is not None and Path(path).name.startswith('.results'):
            writes.append(path)
            if len(writes) == 3:  # the table after the third model: half written, then Ctrl-C
                Path(path).write_text('model,gro'); raise KeyboardInterrupt
        return to_csv(self, path, *a, **k)
    monkeypatch.setattr(pd.DataFrame, 'to_csv', flaky)
    code, _, err = run(*argv, '--out', tmp_path / 'cut')
    assert code == 130 and '--resume' in err, err
    monkeypatch.undo()
    kept = pd.read_csv(tmp_path / 'cut' / 'results.csv')
    assert list(pd.unique(kept.model)) == ['control', 'mean'] and not list((tmp_path / 'cut').glob('.*'))
    fitted = []
    for name in ('control', 'mean', 'linear'):
        cls = cli.model_class(name)
        monkeypatch.setattr(cls, 'fit',
                            lambda self, train, _f=cls.fit, _n=name, **k: fitted.append(_n) or _f(self, train, **k))
    code, _, err = run(*argv, '--out', tmp_path / 'cut')
    assert code == 2 and 'already holds the outputs' in err  # neither --resume nor --overwrite
    ok(*argv, '--out', tmp_path / 'cut', '--resume')
    assert fitted == ['linear']
    for f in ('results.csv', 'summary.csv', 'summary_by_subgroup.csv'):
        assert (tmp_path / 'cut' / f).read_bytes() == (tmp_path / 'fresh' / f).read_bytes(), f
    assert sorted(p.name for p in (tmp_path / 'cut' / 'predictions').iterdir()) == [
        'control.h5ad',
        'linear.h5ad',
        'mean.h5ad',
    ]
    code, _, err = run(*argv, '--out', tmp_path / 'cut', '--resume', '--seed', '3')
    assert code == 2 and 'other settings (seed: 0 there, 3 now)' in err, err


def test_overwrite_leaves_no_stale_predictions(files, tmp_path):
    ok(*bench(files, *SPLIT, '--out', tmp_path))
    ok(*bench(files, *SPLIT, '--models', 'additive', '--out', tmp_path, '--overwrite'))
    assert [p.name for p in (tmp_path / 'predictions').iterdir()] == ['additive.h5ad']
    assert set(pd.read_csv(tmp_path / 'results.csv').model) == {'additive'}
    code, _, err = run(*bench(files, *SPLIT, '--models', 'control', '--out', tmp_path, '--resume'))
    assert code == 2 and "holds results of ['additive'], not in --models" in err


def _stop_training_after(monkeypatch, steps: int) -> None:
    "The trainer stops after `steps` steps (its checkpoints written), then Ctrl-C."
    real = train.fit
    def fit(*a, stop_after=None, **k):
        real(*a, stop_after=steps, **k); raise KeyboardInterrupt
    _patch_trainer(monkeypatch, fit)


def _record_training(monkeypatch) -> list:
    "Record (resume, out_dir, step of the checkpoint found) of each trainer call."
    real, calls = train.fit, []
    def fit(module, loss_fn, make_batches, config, *a, **k):
        ck = Path(config.out_dir) / 'last.pt' if config.out_dir else None
        calls.append((config.resume, config.out_dir,
                      torch.load(ck, weights_only=True)['step'] if ck and ck.exists() else None))
        return real(module, loss_fn, make_batches, config, *a, **k)
    _patch_trainer(monkeypatch, fit)
    return calls


def _patch_trainer(monkeypatch, fit) -> None:
    "Replace the trainer where the models call it (each model module imports `perturbdiff.train.fit` as `train_fit`)."
    for mod in (ddib, bridges, mask): monkeypatch.setattr(mod, 'train_fit', fit)


TRAINED = ['--set', 'steps=4', '--n-cells', '5', '--device', 'cpu']


def test_benchmark_resumes_a_trained_model_from_its_checkpoint(files, tmp_path, monkeypatch):
    argv = [*bench(files, '--models', 'control,unlasting'), *SPLIT, *TRAINED, '--out', tmp_path]
    _stop_training_after(monkeypatch, 2)
    code, _, err = run(*argv)
    assert code == 130, err
    ckpt = tmp_path / 'checkpoints' / 'unlasting' / 'denoiser' / 'last.pt'
    assert torch.load(ckpt, weights_only=True)['step'] == 2
    assert set(pd.read_csv(tmp_path / 'results.csv').model) == {'control'}  # the baseline finished first: kept
    monkeypatch.undo()
    calls = _record_training(monkeypatch)
    ok(*argv, '--resume')
    assert calls == [(True, str(ckpt.parent), 2)]  # resumed from step 2
    assert torch.load(ckpt, weights_only=True)['step'] == 4
    assert list(pd.unique(pd.read_csv(tmp_path / 'results.csv').model)) == ['control', 'unlasting']


def test_fit_resume(files, tmp_path, monkeypatch):
    argv = ['fit', '--data', files['tiny'], *DATA, *SPLIT, '--model', 'unlasting', *TRAINED[:2], '--device', 'cpu',
            '--out', tmp_path, '--quiet']
    _stop_training_after(monkeypatch, 2)
    assert run(*argv)[0] == 130
    monkeypatch.undo()
    code, _, err = run(*argv)
    assert code == 2 and '--resume' in err
    calls = _record_training(monkeypatch)
    ok(*argv, '--resume')
    assert calls == [(True, str(tmp_path / 'checkpoints' / 'denoiser'),
                      2)] and (tmp_path / 'model' / 'model.json').is_file()
    ok(*argv, '--resume')  # already fitted: nothing to do
    assert len(calls) == 1
    ok('predict', '--run', tmp_path, '--out', tmp_path / 'p.h5ad', '--n-cells', '3', '--quiet')


def test_overwrite_never_deletes_files_it_did_not_write(files, tmp_path):
    """--overwrite clears perturbdiff's outputs only: a folder of the same name holding a user's files is refused,
    untouched."""
    (tmp_path / 'predictions').mkdir()
    mine = tmp_path / 'predictions' / 'my_notes.txt'; mine.write_text('keep me')
    code, _, err = run(*bench(files, *SPLIT, '--out', tmp_path, '--overwrite'))
    assert code == 2 and len(err.strip().splitlines()) == 1 and 'did not write' in err and 'Traceback' not in err
    assert mine.read_text() == 'keep me'


def test_benchmark_api_resume_refuses_another_split(files, tmp_path):
    """benchmark(resume=True) reuses a finished model only on the same test groups; another split is refused, not mixed
    in."""
    data = api.load_data(files['tiny'], cell_type_key='cell_type', mode_key='perturbation_type')
    a = api.make_split(data, 'unseen_perturbation', test_frac=0.5, seed=0)
    b = api.make_split(data, 'unseen_perturbation', test_frac=0.5, seed=1)
    assert set(a.test_groups.index) != set(b.test_groups.index)
    api.benchmark(a, 'control', out=tmp_path, progress=False)
    with pytest.raises(ValueError, match='other test groups'):
        api.benchmark(b, 'control,mean', out=tmp_path, resume=True, progress=False)
    same = api.benchmark(a, 'control,mean', out=tmp_path, resume=True, progress=False)
    assert set(same.results.model) == {'control', 'mean'}
