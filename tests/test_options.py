"""Options that no preset sets (issue 15: every config field is used by a preset, a test or an ablation): each one is
shown to reach what it configures, on tiny models of the simulator. Options that only change how predictions are
computed (batching, latent reuse) must not change them beyond float32 rounding; the others must change something."""
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from perturbdiff.bridges import bridge_loss
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.ddib import DDIBBatches
from perturbdiff.gat import GRNBlock
from perturbdiff.models import Departures, Doloris, Unlasting
from perturbdiff.train import TrainConfig, fit

warnings.filterwarnings('ignore', message='.*no path to a measured gene.*')
DDIB_TINY = dict(steps=6, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, sampling_steps=5)


@pytest.fixture(scope='module')
def split():
    sim = simulate(seed=0, n_genes=30, n_regulators=5, n_single=5, n_combo=2, cells_per_group=12, n_control=48,
                   n_cell_types=1)
    return PerturbData(sim, cell_type_key='cell_type',
                       mode_key='perturbation_type').split('unseen_combo', test_frac=1.0)


def tiny(cls, preset='quick', **over):
    kw = dict(DDIB_TINY) if cls is not Departures else dict(steps=6, dim=4, time_dim=8, sampling_steps=5)
    return cls.from_preset(preset, seed=0, device='cpu', progress=False, **{**kw, **over})


def predict_with(model, split, **config):
    "Predictions (log1p) of the same fitted model with some prediction-time options changed."
    keep = model.config
    model.config = replace(keep, **config)
    try: return np.asarray(model.predict(split.test, seed=0).X)
    finally: model.config = keep


@pytest.fixture(scope='module')
def doloris(split):
    return tiny(Doloris).fit(split.train)


def test_ddib_batching_and_latent_reuse_do_not_change_predictions(doloris, split):
    "predict_batch and reuse_latents trade memory for speed: the deterministic DDIM chain gives the same cells."
    base = predict_with(doloris, split)
    np.testing.assert_allclose(predict_with(doloris, split, predict_batch=3), base, atol=1e-5)
    np.testing.assert_allclose(predict_with(doloris, split, reuse_latents=False), base, atol=1e-5)


def test_ddib_clip_reaches_the_sampler(doloris, split):
    "clip bounds x̂0 in DDIM inversion and decoding: a narrow range changes the predicted cells."
    base = predict_with(doloris, split)
    assert np.abs(predict_with(doloris, split, clip=(0.0, 0.05)) - base).max() > 1e-3


def test_train_on_respaced_false_trains_the_whole_chain(split):
    m = tiny(Unlasting, train_on_respaced=False).fit(split.train)
    assert m.sched_train_.n_steps == m.config.T
    assert m.sampling_schedule(2 * m.config.sampling_steps).n_steps == 2 * m.config.sampling_steps
    respaced = tiny(Unlasting, steps=1).fit(split.train)
    assert respaced.sched_train_.n_steps == respaced.config.sampling_steps
    with pytest.raises(ValueError, match='train_on_respaced=False'):
        respaced.sampling_schedule(respaced.config.sampling_steps + 1)


@pytest.mark.parametrize('cls,option,count', [
    (Unlasting, 'gat_layers', lambda net: sum(len(b.gat) for b in net.modules() if isinstance(b, GRNBlock))),
    (Departures, 'layers_continuous', lambda net: len(net.continuous.gat)),
    (Departures, 'layers_discrete', lambda net: len(net.discrete.gat)),
], ids=['gat_layers', 'layers_continuous', 'layers_discrete'])
def test_layer_counts_build_the_networks(split, cls, option, count):
    kw = dict(use_discrete=True, anchor=False) if option == 'layers_discrete' else {}  # quick: no discrete bridge
    one, three = (count(tiny(cls, steps=0, **kw, **{option: k}).fit(split.train).net_) for k in (1, 3))
    assert three == 3 * one > 0


def test_layers_discrete_zero_drops_the_discrete_bridge(split):
    m = tiny(Departures, steps=0, use_discrete=True, anchor=False, layers_discrete=0).fit(split.train)
    assert m.net_.discrete is None and m.net_.continuous is not None


@pytest.mark.parametrize('cls', [Doloris, Departures], ids=lambda c: c.__name__)
def test_coexpression_threshold_sets_the_graph(split, cls):
    n_edges = {t: tiny(cls, steps=0, coexpression_threshold=t).fit(split.train).graph_.edge_index.shape[1]
               for t in (0.1, 0.9)}
    assert n_edges[0.1] > n_edges[0.9], n_edges


def test_source_fraction_sets_the_batches(split):
    b = DDIBBatches(split.train, batch_size=8, source_fraction=0.5, seed=0)
    assert (b.n_src, b.n_tgt) == (4, 4)
    assert (DDIBBatches(split.train, batch_size=8, source_fraction=0.25, seed=0).n_src) == 2


@pytest.mark.parametrize('cls', [Unlasting, Departures], ids=lambda c: c.__name__)
def test_weight_decay_reaches_the_optimizer(split, cls):
    "With lr > 0 and a large weight decay the weights shrink: trained with and without it, the nets differ."
    nets = [tiny(cls, steps=3, lr=1e-3, weight_decay=wd).fit(split.train).net_ for wd in (0.0, 10.0)]
    assert tiny(cls, weight_decay=0.5).train_config(steps=1).weight_decay == 0.5
    w = [torch.cat([p.detach().flatten() for p in n.parameters()]) for n in nets]
    assert w[1].norm() < w[0].norm()


def test_t_eps_bounds_the_bridge_times(split):
    "t_eps keeps the sampled bridge times in [t_eps, 1 - t_eps]."
    m = tiny(Departures, steps=0).fit(split.train)
    seen = []
    class Spy(torch.nn.Module):
        def forward(self, x_t, t, *rest):
            seen.append(t.clone())
            return m.net_(x_t, t, *rest)
    batch = next(iter(m.batches_(0)))
    for eps in (0.4, 0.001):
        bridge_loss(Spy(), batch, torch.Generator().manual_seed(0), m.table_, replace(m.config, t_eps=eps))
    assert seen[0].min() >= 0.4 and seen[0].max() <= 0.6 and (seen[1] < 0.4).any()


def masked(cls, split, **over):
    "Predictions of a tiny `plain` model (mask model on) fitted with the given mask options."
    m = tiny(cls, 'plain', mask_steps=4, mask_hidden=8, **over).fit(split.train)
    return np.asarray(m.predict(split.test, seed=0).X)


def test_mask_threshold_options(split):
    """Threshold masks (Unlasting's paper strategy): mask_tau is the probability cut, mask_k the number of control
    inputs per predicted cell."""
    kw = dict(mask_strategy='threshold')
    nonzero = {tau: float((masked(Unlasting, split, mask_tau=tau, **kw) > 0).mean()) for tau in (0.01, 0.99)}
    assert nonzero[0.01] > nonzero[0.99], nonzero
    assert not np.array_equal(masked(Unlasting, split, mask_k=1, **kw), masked(Unlasting, split, mask_k=5, **kw))


def test_mask_coherent_options(split):
    """Coherent masks (the plain presets): a gene with probability >= mask_high is kept, one <= mask_low dropped,
    whatever the borrowed mask says; cuts near 0 keep nearly every gene, cuts near 1 drop nearly every one."""
    keep = float((masked(Doloris, split, mask_high=0.02, mask_low=0.01) > 0).mean())
    drop = float((masked(Doloris, split, mask_high=0.99, mask_low=0.98) > 0).mean())
    assert keep > drop, (keep, drop)


def test_amp_runs_the_forward_pass_under_bf16_autocast_on_cpu(monkeypatch):
    """amp=True autocasts the forward pass to bf16 on a CPU too; where the CPU has no bf16 instructions it warns that
    this is slower than float32."""
    import perturbdiff.train as T
    net, seen = torch.nn.Linear(2, 1), []
    def loss(net, b, g):
        y = net(b['x']); seen.append(y.dtype)
        return y.float().pow(2).mean(), {}
    batches = lambda epoch, rank=0, world_size=1: [dict(x=torch.ones(4, 2))]
    monkeypatch.setattr(T, 'bf16_native', lambda device: False)
    with pytest.warns(UserWarning, match='emulated on this device'):
        fit(net, loss, batches, TrainConfig(steps=1, device='cpu', amp=True, progress=False))
    fit(net, loss, batches, TrainConfig(steps=1, device='cpu', amp=False, progress=False))
    assert seen == [torch.bfloat16, torch.float32], seen
    assert net.weight.dtype == torch.float32  # the weights stay float32


def test_departures_predict_batch_changes_only_the_noise_draws(split):
    """Departures' SDE draws noise batch by batch, so another predict_batch gives other draws of the same model: the
    same cells per group and the same group means within sampling noise."""
    m = tiny(Departures).fit(split.train)
    a, b = predict_with(m, split), predict_with(m, split, predict_batch=2)
    assert a.shape == b.shape and np.isfinite(b).all()
    assert np.abs(a.mean(0) - b.mean(0)).max() < 0.2 * (np.abs(a.mean(0)).max() + 1e-6)
