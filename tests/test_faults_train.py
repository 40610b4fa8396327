"""Issue #14 (reliability) regressions for the trainer, through the models on the simulator: resume from a checkpoint at
the last step (a finished run, a run killed in the mask phase), steps=0, a log without duplicate steps after a resume,
and a diverging run that stops with `TrainingDiverged` and leaves its last finite checkpoint on disk."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.mask import MaskModel
from perturbdiff.models import Departures, Doloris, Unlasting
from perturbdiff.priors import coexpression, edge_list
from perturbdiff.train import TrainingDiverged

warnings.filterwarnings('ignore', message='.*no path to a measured gene.*')

# tiny networks; 'plain' presets for the DDIB models, which train a mask model after the denoiser
TINY = dict(Unlasting=dict(steps=12, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, mask_steps=6, mask_hidden=8,
                           n_control=10, sampling_steps=5),
            Doloris=dict(steps=12, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, pca_dim=4, mask_steps=6,
                         mask_hidden=8, n_control=10, sampling_steps=5),
            Departures=dict(steps=12, dim=4, time_dim=8, sampling_steps=5))
PRESET = dict(Unlasting='plain', Doloris='plain', Departures='quick')
MODELS = [Unlasting, Doloris, Departures]


@pytest.fixture(scope='module')
def screen():
    "A one-cell-type simulated CRISPRi screen, its split and the true graph as prior."
    sim = simulate(seed=0, n_genes=100, n_regulators=10, n_single=10, n_combo=4, cells_per_group=40, n_control=200,
                   n_cell_types=1)
    data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')
    prior = [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]
    return data.split('unseen_perturbation', test_frac=0.25, seed=0), prior


def make(cls, prior, **overrides):
    kw = {**TINY[cls.__name__], **overrides}
    return cls.from_preset(PRESET[cls.__name__], seed=0, device='cpu', progress=False, graph=prior, **kw)


def nets(model) -> list[torch.nn.Module]:
    "The trained networks of a model: the denoiser or bridge net, and the mask net when there is one."
    mask = getattr(model, 'mask_', None)
    return [model.net_] + ([mask.net] if mask is not None else [])


def assert_same_weights(a, b):
    for na, nb in zip(nets(a), nets(b), strict=True):
        for (k, x), y in zip(na.state_dict().items(), nb.state_dict().values(), strict=True):
            assert torch.equal(x, y), k


def logs(out_dir) -> list:
    return sorted(out_dir.rglob('log.csv'))


# --- defect 1: resume from a checkpoint at the last step; steps=0; a log without duplicates -------------------------

@pytest.mark.parametrize('cls', MODELS, ids=lambda c: c.__name__)
def test_resume_of_a_finished_run_is_a_no_op(screen, cls, tmp_path):
    split, prior = screen
    done = make(cls, prior).fit(split.train, out_dir=str(tmp_path))
    before = {p: p.read_text() for p in logs(tmp_path)}
    assert before
    again = make(cls, prior).fit(split.train, out_dir=str(tmp_path), resume=True)
    assert_same_weights(done, again)
    assert np.array_equal(done.predict(split.test, seed=1).X, again.predict(split.test, seed=1).X)
    assert {p: p.read_text() for p in logs(tmp_path)} == before  # nothing re-logged


@pytest.mark.parametrize('mask_steps,kill_at', [(6, 4), (55, 53)],
                         ids=['before-mask-checkpoint', 'after-mask-checkpoint'])
@pytest.mark.parametrize('cls', [Unlasting, Doloris], ids=lambda c: c.__name__)
def test_resume_of_a_run_killed_in_the_mask_phase(screen, cls, mask_steps, kill_at, tmp_path, monkeypatch):
    "The denoiser finished (its checkpoint is at its last step) and the mask model was killed at step `kill_at`."
    split, prior = screen
    whole = make(cls, prior, mask_steps=mask_steps).fit(split.train)
    loss, calls = MaskModel._loss, []
    def killed(self, *a, **k):
        calls.append(1)
        if len(calls) == kill_at: raise KeyboardInterrupt
        return loss(self, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(MaskModel, '_loss', killed)
        with pytest.raises(KeyboardInterrupt):
            make(cls, prior, mask_steps=mask_steps).fit(split.train, out_dir=str(tmp_path))
    assert (tmp_path / 'mask' / 'last.pt').exists() == (kill_at > 50)  # the mask model checkpoints every 50 steps
    resumed = make(cls, prior, mask_steps=mask_steps).fit(split.train, out_dir=str(tmp_path), resume=True)
    assert_same_weights(whole, resumed)
    assert np.array_equal(whole.predict(split.test, seed=2).X, resumed.predict(split.test, seed=2).X)
    mask_log = pd.read_csv(tmp_path / 'mask' / 'log.csv')
    assert mask_log.step.is_unique and mask_log.step.iloc[-1] == mask_steps


@pytest.mark.parametrize('cls', MODELS, ids=lambda c: c.__name__)
def test_zero_steps_return_the_untrained_model_with_a_warning(screen, cls, tmp_path):
    split, prior = screen
    zero = dict(steps=0, mask_steps=0) if cls is not Departures else dict(steps=0)
    with pytest.warns(UserWarning, match='steps=0'):
        m = make(cls, prior, **zero).fit(split.train, out_dir=str(tmp_path))
    with pytest.warns(UserWarning, match='steps=0'):
        again = make(cls, prior, **zero).fit(split.train, out_dir=str(tmp_path), resume=True)
    assert_same_weights(m, again)
    assert len(m.history_) == 0
    assert np.isfinite(m.predict(split.test, seed=0).X).all()


@pytest.mark.parametrize('cls,overrides', [(Doloris, dict(steps=20)),  # log every step, checkpoint every 2
                                           (Unlasting, dict(steps=20, log_every=3, ckpt_every=4)),  # misaligned
                                           (Departures, dict(steps=20))],  # log every 3, checkpoint every 7 (an epoch)
                         ids=['Doloris', 'Unlasting-misaligned', 'Departures'])
def test_log_holds_each_step_once_after_resume(screen, cls, overrides, tmp_path):
    split, prior = screen
    train_kw = {k: overrides[k] for k in ('log_every', 'ckpt_every') if k in overrides}
    model_kw = {k: v for k, v in overrides.items() if k not in train_kw}
    whole = make(cls, prior, **model_kw).fit(split.train, out_dir=str(tmp_path / 'whole'), **train_kw)
    make(cls, prior, **model_kw).fit(split.train, out_dir=str(tmp_path / 'run'), stop_after=11, **train_kw)
    resumed = make(cls, prior, **model_kw).fit(split.train, out_dir=str(tmp_path / 'run'), resume=True, **train_kw)
    assert_same_weights(whole, resumed)
    sub = 'denoiser' if cls is not Departures else ''
    ref, got = pd.read_csv(tmp_path / 'whole' / sub / 'log.csv'), pd.read_csv(tmp_path / 'run' / sub / 'log.csv')
    assert got.step.is_unique, got.step.tolist()
    assert got.step.tolist() == ref.step.tolist()
    pd.testing.assert_frame_equal(ref.drop(columns='seconds'), got.drop(columns='seconds'))  # the same means, exactly
    pd.testing.assert_frame_equal(whole.history_.drop(columns='seconds'), resumed.history_.drop(columns='seconds'))


def test_resume_past_the_configured_steps_is_refused(screen, tmp_path):
    split, prior = screen
    make(Doloris, prior, steps=8).fit(split.train, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match='step 8.*4 steps'):
        make(Doloris, prior, steps=4).fit(split.train, out_dir=str(tmp_path), resume=True)


# --- defect 4: divergence -------------------------------------------------------------------------------------------

def finite_checkpoint(path) -> int:
    "The step of the checkpoint at `path`, after checking that every weight, optimiser and EMA tensor in it is finite."
    st = torch.load(path, weights_only=True)
    tensors = list(st['module'].values()) + list((st.get('ema') or {}).values())
    tensors += [v for s in st['optimizer']['state'].values() for v in s.values() if torch.is_tensor(v)]
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    return st['step']


@pytest.mark.parametrize('cls', MODELS, ids=lambda c: c.__name__)
def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(screen, cls, tmp_path):
    split, prior = screen
    # caught either by the loss check or, when the loss is still finite, by the weights check before a checkpoint
    with pytest.raises(TrainingDiverged,
                       match=r'(?is)step \d+: the (loss is|weights \(or optimiser state\) are) not finite'
                                               r'.*lower the learning rate') as e:
        make(cls, prior, lr=1e6).fit(split.train, out_dir=str(tmp_path), ckpt_every=1, log_every=1)
    assert isinstance(e.value, RuntimeError) and e.value.step >= 2
    if 'the loss is not finite' in str(e.value): assert not np.isfinite(e.value.loss)
    ckpt = tmp_path / ('denoiser' if cls is not Departures else '') / 'last.pt'
    assert finite_checkpoint(ckpt) == e.value.step - 1  # the step before the one that diverged
    log = pd.read_csv(ckpt.parent / 'log.csv')
    assert np.isfinite(log.loss).all()  # no non-finite row was logged
    # the diverged step is logged only when its loss was finite (the weights check caught the update that followed)
    assert log.step.max() < e.value.step or (log.step.max() == e.value.step and np.isfinite(e.value.loss))


def test_non_finite_predictions_are_refused_not_written():
    """Issue #14 item 4: a model whose output holds NaN/inf gets an error naming the cells, never an AnnData (so nothing
    is written). `prediction_anndata` is where every model builds its output."""
    from perturbdiff.contract import prediction_anndata
    from perturbdiff.data import PerturbData
    from perturbdiff.datasets import simulate
    sim = simulate(n_genes=20, n_regulators=4, n_single=4, n_combo=0, cells_per_group=10, n_cell_types=1, seed=0)
    split = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type', space='log1p').split(
        'unseen_perturbation', test_frac=0.5, seed=0)
    g = split.test.groups()
    ids = [g.index[0]] * 3
    X = np.ones((3, split.train.n_genes)); X[2, 0] = np.inf
    with pytest.raises(RuntimeError, match='non-finite values in 1 of 3 cells'):
        prediction_anndata(X, ids, g, split.train, 'broken')
    assert prediction_anndata(np.ones((3, split.train.n_genes)), ids, g, split.train, 'fine').n_obs == 3
