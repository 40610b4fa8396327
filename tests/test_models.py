"""The three models end to end: known effects on the simulator, exact resume, save/load, bad input."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from perturbdiff.baselines import ControlBaseline
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate, true_shift
from perturbdiff.metrics import evaluate
from perturbdiff.models import Departures, Doloris, Unlasting
from perturbdiff.priors import coexpression, edge_list

warnings.filterwarnings('ignore', message='.*no path to a measured gene.*')


def simulated_screen(n_single: int, n_combo: int, split_kind: str, test_frac: float, combos_of: str = 'pool'):
    "A one-cell-type simulated CRISPRi screen with strong effects, its split, and the true graph as prior."
    sim = simulate(seed=0, n_genes=100, n_regulators=10, n_single=n_single, n_combo=n_combo, cells_per_group=40,
                   n_control=200, n_cell_types=1, combos_of=combos_of)
    data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')
    prior = [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]
    return sim, data.split(split_kind, test_frac=test_frac, seed=0), prior


def fit_quick(split, prior, preset: str = 'quick') -> dict:
    """Each model fitted once on the training split: a CPU preset ('quick', anchored, or 'plain'), seed 0, the given
    graph prior."""
    return {cls.__name__: cls.from_preset(preset, seed=0, device='cpu', progress=False, graph=prior).fit(split.train)
            for cls in (Unlasting, Doloris, Departures)}


@pytest.fixture(scope='module')
def screen():
    "10 singles and 4 pairs; 4 single knockdowns held out (`unseen_perturbation`)."
    return simulated_screen(10, 4, 'unseen_perturbation', 0.25)


def known_effect_report(sim, split, pred):
    """Direction of the predicted change of each unseen knockdown's own target gene (truth: down), and E-distance on
    the top-20 DE genes, ours vs the control baseline.

    The direct effect on the target is the known effect a model can infer for a perturbation it never saw: the
    simulator's downstream effects go through regulatory edges of random sign, and the prior gives the models the
    edges but not their signs (GAT attention weights are positive), so their direction is not identifiable."""
    genes = list(split.train.genes)
    ctrl = split.train.dense(split.train.obs.control.to_numpy()).mean(0)
    moves = []
    for cond in split.test.conditions:
        truth = true_shift(sim, cond, 'type0').reindex(genes)
        shift = pred.X[(pred.obs.condition == cond).to_numpy()].mean(0) - ctrl
        for g in (g for g in cond.split('+') if g in genes):
            assert truth[g] < -1  # a knockdown: the target goes down
            moves.append(float(shift[genes.index(g)]))
    base = ControlBaseline().fit(split.train).predict(split.test)
    ours, ref = evaluate(pred, split.test, split.train), evaluate(base, split.test, split.train)
    return moves, float(ours.edist_de20.mean()), float(ref.edist_de20.mean())


@pytest.fixture(scope='module')
def known_effects(screen):
    """Each model fitted once and its report on the held-out knockdowns: the `plain` preset (the papers' models at CPU
    size). The anchored `quick` presets fail these two tests: an unseen target's anchor is the mean training effect
    (the rule chosen by leave-one-out on the training singles), which does not lower the target itself and is further
    from the truth than the control cells on this simulator (issue 13's note gives the figures)."""
    sim, split, prior = screen
    out = {}
    for name, model in fit_quick(split, prior, 'plain').items():
        out[name] = moves, ed, ed_ctrl = known_effect_report(sim, split, model.predict(split.test, seed=0))
        print(f'{name}: target shifts {np.round(moves, 3)}, E-distance DE20 {ed:.3f} vs control baseline {ed_ctrl:.3f}')
    return out


@pytest.mark.parametrize('name', ['Unlasting', 'Doloris', 'Departures'])
def test_unseen_knockdown_lowers_its_target(known_effects, name):
    "Unseen knockdowns of measured genes: every target gene goes down (without DirectEffect they went up)."
    moves, _, _ = known_effects[name]
    assert len(moves) >= 2 and all(m < 0 for m in moves), moves


@pytest.mark.parametrize('name', [
    'Unlasting', 'Doloris',
    pytest.param('Departures', marks=pytest.mark.xfail(strict=True, reason=(
        'Measured (plain preset, this simulator, seed 0): E-distance DE20 over the 4 held-out knockdowns 2.05 against '
        'the control baseline\'s 1.77; two of them target unmeasured regulators whose downstream signs the unsigned '
        'prior cannot give. Strict: the day it beats the baseline here, this marker must go.')))])
def test_unseen_knockdowns_beat_control_on_edistance(known_effects, name):
    """E-distance DE20 over the held-out knockdowns beats the control baseline. Measured margins are small and, for
    Doloris, seed-dependent: Unlasting 1.72 / 1.64 / 1.71 and Doloris 1.75 / 1.90 / 1.61 at model seeds 0 / 1 / 2,
    against 1.77; this test runs seed 0."""
    _, ed, ed_ctrl = known_effects[name]
    assert ed < ed_ctrl, (ed, ed_ctrl)


@pytest.fixture(scope='module')
def pair_screen():
    """12 single knockdowns and 12 pairs made of them (`combos_of='singles'`, Norman's design); half of the pairs held
    out (`unseen_combo`), all their singles trained on: the effect of a held-out pair is known from its parts (the
    simulator sums direct effects along the graph, clips, and adds an interaction term to about a third of the
    pairs)."""
    sim, split, prior = simulated_screen(12, 12, 'unseen_combo', 0.5, combos_of='singles')
    singles = {c for c in split.train.conditions if '+' not in c}
    assert len(split.test.conditions) == 6 and all(set(c.split('+')) <= singles for c in split.test.conditions)
    return sim, split, prior


def pair_report(split, pred):
    """Per held-out pair: correlation of the predicted and the observed mean shift on the pair's top-20 DE genes
    (observed vs the training controls), and E-distance DE20 (mean over pairs), ours and the control baseline's."""
    ctrl = split.train.dense(split.train.obs.control.to_numpy()).mean(0)
    corrs = []
    for cond in split.test.conditions:
        obs = split.test.dense((split.test.obs.condition == cond).to_numpy()).mean(0) - ctrl
        shift = pred.X[(pred.obs.condition == cond).to_numpy()].mean(0) - ctrl
        top = np.argsort(-np.abs(obs))[:20]
        corrs.append(float(np.corrcoef(shift[top], obs[top])[0, 1]))
    base = ControlBaseline().fit(split.train).predict(split.test)
    return corrs, float(evaluate(pred, split.test, split.train).edist_de20.mean()), \
        float(evaluate(base, split.test, split.train).edist_de20.mean())


@pytest.fixture(scope='module')
def pair_effects(pair_screen):
    """Each model fitted once (quick preset) and its report on the held-out pairs; also Unlasting's fit predicted with
    the paper's threshold masks and Doloris' with the paper's coherent masks (marginals not matched), both
    prediction-only
    changes of the config."""
    _, split, prior = pair_screen
    variants = dict(Unlasting=('threshold masks', 'mask_strategy', 'threshold'),
                    Doloris=('unmatched coherent masks', 'mask_match_marginals', False))
    out = {}
    models = fit_quick(split, prior)
    for name, model in models.items():
        out[name] = pair_report(split, model.predict(split.test, seed=0))
        if name in variants and getattr(model.config, 'use_mask', False):  # the same fit, one prediction-time option
                                                                           # changed
            label, key, value = variants[name]
            setattr(model.config, key, value)
            out[f'{name}, {label}'] = pair_report(split, model.predict(split.test, seed=0))
    for name, (corrs, ed, ed_ctrl) in out.items():
        print(
            f'{name}: DE20 shift correlations {np.round(corrs, 2)}, E-distance DE20 {ed:.3f} vs control {ed_ctrl:.3f}'
        )
    out['_models'] = models
    return out


@pytest.mark.parametrize('name', ['Unlasting', 'Doloris', 'Departures'])
def test_two_trained_singles_get_different_predictions(pair_screen, pair_effects, name):
    """Every trained perturbation has its own representation (issue 13): for the two training singles whose effects
    differ most, each prediction's mean is closer to its own truth than to the other single's, on the genes where
    the two truths differ most. Failed before the anchor: the plain models predicted nearly the same cells for both."""
    _, split, _ = pair_screen
    tr, model = split.train, pair_effects['_models'][name]
    singles = [c for c in tr.conditions if '+' not in c]
    means = {c: tr.dense((tr.obs.condition == c).to_numpy()).mean(0) for c in singles}
    a, b = max(((x, y) for x in singles for y in singles if x < y),
               key=lambda p: np.abs(means[p[0]] - means[p[1]]).sum())
    top = np.argsort(-np.abs(means[a] - means[b]))[:20]
    pred = model.predict([a, b], n_cells=100, seed=0)
    pm = {c: pred.X[(pred.obs.condition == c).to_numpy()].mean(0) for c in (a, b)}
    d = lambda u, v: float(np.abs(u[top] - v[top]).mean())
    assert d(pm[a], means[a]) < d(pm[a], means[b]) and d(pm[b], means[b]) < d(pm[b], means[a]), (
        a,
        b,
        d(pm[a], means[a]),
        d(pm[a], means[b]),
    )


@pytest.mark.parametrize('name', ['Unlasting', 'Doloris', 'Departures'])
def test_pairs_of_trained_singles_within_floor_of_additive(pair_screen, pair_effects, name):
    """Held-out pairs of two trained singles: the anchored quick models come within the sampling floor of the additive
    baseline (E-distance DE20, mean over the pairs; the floor: two random halves of each pair's true cells)."""
    from perturbdiff.baselines import AdditiveBaseline
    from perturbdiff.metrics import sampling_floor
    _, split, _ = pair_screen
    add = float(evaluate(AdditiveBaseline().fit(split.train).predict(split.test), split.test,
                         split.train).edist_de20.mean())
    fl = sampling_floor(split.test, control=split.train, seed=0)
    ed = pair_effects[name][1]
    print(f'{name}: E-distance DE20 {ed:.3f}, additive {add:.3f}, floor {np.mean(fl):.3f}')
    assert ed < add + float(np.mean(fl)), (ed, add, float(np.mean(fl)))


@pytest.mark.parametrize('name', ['Unlasting', 'Doloris', 'Departures'])
def test_ladder_step1_training_singles_beat_mean(pair_screen, pair_effects, name):
    """Learnability ladder, step 1 (issue 13): a model must reproduce what it was trained on. On the training singles,
    its E-distance DE20 (mean over singles) beats the mean baseline's, which predicts one shift for every single.
    A model that fails this has a bug, not a hard task."""
    from perturbdiff.baselines import MeanBaseline
    _, split, _ = pair_screen
    tr, model = split.train, pair_effects['_models'][name]
    sg = tr.groups()
    from perturbdiff.metrics import de_rankings
    de = de_rankings(tr, tr, list(sg.index))
    ed = float(evaluate(model.predict(sg, seed=0), tr, tr, de_genes=de).edist_de20.mean())
    mean = float(evaluate(MeanBaseline().fit(tr).predict(sg, seed=0), tr, tr, de_genes=de).edist_de20.mean())
    print(f'{name}: training singles E-distance DE20 {ed:.3f}, mean baseline {mean:.3f}')
    assert ed < mean, (ed, mean)


def test_anchor_refuses_masks_and_fill(screen):
    _, split, prior = screen
    with pytest.raises(ValueError, match='use_mask=False'):
        Doloris.from_preset('quick', device='cpu', progress=False, graph=prior, use_mask=True,
                            **TINY['Doloris']).fit(split.train)
    with pytest.raises(ValueError, match='use_discrete=False'):
        Departures.from_preset('quick', device='cpu', progress=False, graph=prior, use_discrete=True,
                               **TINY['Departures']).fit(split.train)


def test_bridge_depth_refusals_and_identity(screen):
    """bridge_depth (ours): refused without inversion or below ode_start; a shallow bridge keeps each decoded cell
    closer to the control cell it was inverted from than the whole chain does (what the option is for)."""
    _, split, prior = screen
    with pytest.raises(ValueError, match='use_latent=False'):
        Doloris.from_preset('quick', device='cpu', progress=False, graph=prior, use_latent=False, bridge_depth=100,
                            **TINY['Doloris']).fit(split.train)
    with pytest.raises(ValueError, match='must lie above ode_start'):
        Doloris.from_preset('quick', device='cpu', progress=False, graph=prior, ode_start=100, bridge_depth=50,
                            **TINY['Doloris']).fit(split.train)
    model = Doloris.from_preset('quick', device='cpu', progress=False, graph=prior,
                                # chain timesteps 0, 10, 20, ...
                                **{**TINY['Doloris'], 'sampling_steps': 50}).fit(split.train)
    tr, row = model.train_, split.test.groups().iloc[0]
    ct = list(model.cond_.cell_types).index(row.cell_type)
    rows = np.flatnonzero(tr.obs.control.to_numpy() & (tr.obs.cell_type == row.cell_type).to_numpy())[:20]
    x = torch.as_tensor(tr.dense(rows, scaled=True))
    moved = {}
    for d in (None, 10):  # timestep 10 of 500: noise sd 0.08 in model space
        model.config.bridge_depth = d
        lat = model._invert(x, ct, torch.Generator().manual_seed(0))
        out = model._decode(lat, x, ct, model._condition_index(row.condition), row.dose, row['mode'])
        moved[d] = float((out - x).abs().mean())
    model.config.bridge_depth = None
    print(f'mean |decoded - source control| (model space): whole chain {moved[None]:.4f}, depth 10 {moved[10]:.4f}')
    assert moved[10] < moved[None], moved  # measured: 0.062 against 0.089 (12 training steps)
    # decode_residual (ours): x + D(z, target) - D(z, source) moves the cell by the condition's change only; the source
    # model's reconstruction error D(z, source) - x, which dominates a barely trained model, cancels
    lat = model._invert(x, ct, torch.Generator().manual_seed(0))
    d = model._decode(lat, x, ct, model._condition_index(row.condition), row.dose, row['mode'])
    r = model._reconstruct(lat, ct)
    assert float((d - r).abs().mean()) < float((d - x).abs().mean())
    g = split.test.groups().iloc[:1]
    assert model.config.decode_residual  # on in the quick preset
    resid = model.predict(g, n_cells=10, seed=0).X
    model.config.decode_residual = False
    plain = model.predict(g, n_cells=10, seed=0).X
    assert not np.allclose(plain, resid)


@pytest.mark.parametrize('name', ['Unlasting', 'Doloris', 'Departures'])
def test_unseen_pairs_direction_and_beat_control(pair_effects, name):
    """Held-out pairs of trained singles: the DE genes move the observed way, and E-distance DE20 beats the control
    baseline."""
    corrs, ed, ed_ctrl = pair_effects[name]
    assert len(corrs) == 6 and all(c > 0 for c in corrs), corrs
    assert ed < ed_ctrl, (ed, ed_ctrl)


TINY = dict(Unlasting=dict(steps=12, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, mask_steps=6, mask_hidden=8,
                           n_control=10, sampling_steps=5),
            Doloris=dict(steps=12, hidden=16, time_dim=8, decoder=(16,), grn_dim=4, pca_dim=4, mask_steps=6,
                         mask_hidden=8, n_control=10, sampling_steps=5),
            Departures=dict(steps=12, dim=4, time_dim=8, sampling_steps=5))


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures], ids=lambda c: c.__name__)
@pytest.mark.parametrize('fused', [False, True], ids=['plain_adamw', 'fused_adamw'])
def test_interrupted_then_resumed_equals_uninterrupted(screen, cls, fused, tmp_path):
    "Exact resume, with AdamW's plain loop and with its fused kernel (the paper presets')."
    _, split, prior = screen
    kw = dict(seed=0, device='cpu', progress=False, graph=prior, fused_adamw=fused, **TINY[cls.__name__])
    whole = cls.from_preset('quick', **kw).fit(split.train)
    cls.from_preset('quick', **kw).fit(split.train, out_dir=str(tmp_path), stop_after=7)
    resumed = cls.from_preset('quick', **kw).fit(split.train, out_dir=str(tmp_path), resume=True)
    for a, b in zip(whole.net_.state_dict().values(), resumed.net_.state_dict().values()):
        assert torch.equal(a, b)
    assert np.array_equal(whole.predict(split.test, seed=2).X, resumed.predict(split.test, seed=2).X)


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures], ids=lambda c: c.__name__)
def test_save_load_same_predictions(screen, cls, tmp_path):
    _, split, prior = screen
    m = cls.from_preset('quick', seed=1, device='cpu', progress=False, graph=prior,
                        **TINY[cls.__name__]).fit(split.train)
    m.save(tmp_path / 'm')
    again = cls.load(tmp_path / 'm', device='cpu')
    assert np.array_equal(m.predict(split.test, seed=5).X, again.predict(split.test, seed=5).X)


def test_same_seed_same_model(screen):
    _, split, prior = screen
    a, b = (Doloris.from_preset('quick', seed=3, device='cpu', progress=False, graph=prior,
                                **TINY['Doloris']).fit(split.train)
            for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.net_.state_dict().values(), b.net_.state_dict().values()))


def test_bad_input(screen):
    _, split, prior = screen
    with pytest.raises(TypeError, match='Unknown options'):
        Unlasting.from_preset('quick', stepz=3)
    with pytest.raises(TypeError, match='Unknown options'):
        Departures.from_preset('quick', sigmaa=0.1)
    m = Departures.from_preset('quick', device='cpu', progress=False, graph=prior, **TINY['Departures'])
    with pytest.raises(RuntimeError, match='not fitted'):
        m.predict(split.test)
    m.fit(split.train)
    with pytest.raises(ValueError, match='No training control cells'):
        m.predict([('G0001', 'nowhere')])
    nosc = split.train.subset()
    nosc.x_max = None
    with pytest.raises(ValueError, match='no fitted scale'):
        Doloris.from_preset('quick', device='cpu', progress=False, graph=prior, **TINY['Doloris']).fit(nosc)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='CUDA is not available'):
            Doloris.from_preset('quick', device='cuda', progress=False, graph=prior, **TINY['Doloris']).fit(split.train)


def test_control_pairs_bridge_controls_within_their_cell_type():
    """Departures' control_pairs (ours): extra control -> control pairs of the same cell type, from one random half of
    its controls to the other (never a cell to itself), as many as control_pairs x the perturbed pairs over the cell
    types, at most half the controls; conditioned as the control (index -1). 0 (the paper) adds none."""
    from perturbdiff.bridges import BridgePairs, bridge_config
    sim = simulate(seed=0, n_genes=40, n_regulators=5, n_single=4, n_combo=0, cells_per_group=20, n_control=60,
                   n_cell_types=2)
    train = PerturbData(sim, cell_type_key='cell_type',
                        mode_key='perturbation_type').split('unseen_perturbation', test_frac=0.25, seed=0).train
    plain = BridgePairs(train, bridge_config('plain'), seed=0)
    assert plain.n_pairs == plain.n_pert and len(plain.pairs(0)) == plain.n_pert
    bp = BridgePairs(train, bridge_config('plain', control_pairs=0.25), seed=0)
    P = bp.pairs(0)
    ctrl = train.obs.control.to_numpy()
    extra = P[ctrl[P[:, 1]]]
    assert len(P) == bp.n_pairs and len(extra) == sum(bp.ctrl_pairs.values()) > 0
    assert ctrl[extra[:, 0]].all() and (extra[:, 0] != extra[:, 1]).all()
    ct = train.obs.cell_type.astype(str).to_numpy()
    assert (ct[extra[:, 0]] == ct[extra[:, 1]]).all()
    for c, k in bp.ctrl_pairs.items():
        n_ctrl = int((ctrl & (ct == c)).sum())
        assert k == min(int(np.ceil(0.25 * bp.n_pert / len(bp.ctrl_pairs))), n_ctrl // 2)
        src, dst = extra[ct[extra[:, 1]] == c].T
        assert not set(src) & set(dst)  # two disjoint halves
    assert (bp.batch(extra)['condition'] == -1).all()


def _denoiser_outputs(model, conditions):
    "The trained network's output for each condition, on the same control cells, time and noise (dropout off)."
    tr = model.train_
    x = torch.as_tensor(tr.dense(np.flatnonzero(tr.obs.control.to_numpy())[:8],
                                 scaled=not isinstance(model, Departures)))
    outs = []
    for c in conditions:
        idx = torch.full((len(x),), tr.vocab.index(c), dtype=torch.long)
        ct = torch.zeros(len(x), dtype=torch.long)
        with torch.no_grad():
            if isinstance(model, Departures):
                net = model.net_.eval()
                outs.append(net.end(x, torch.full((len(x),), 0.5), ct, model.table_.batch(idx), x))
            else:
                net = model.net_.eval()
                cond = model.cond_.cond(ct, idx, None, None, torch.ones(len(x), dtype=torch.bool), x)
                outs.append(net(x, torch.full((len(x),), 400, dtype=torch.long), cond))
    return outs


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures])
def test_target_identity_separates_isolated_targets(cls):
    """Issue 13, cause 1: two trained single knockdowns of unmeasured regulators, with a co-expression-only graph (so
    both are isolated nodes). The papers' networks cannot tell them apart: identical outputs, whatever the training.
    With `target_identity` (ours) each trained target has its own vector, and the outputs differ."""
    sim = simulate(seed=0, n_genes=100, n_regulators=10, n_single=12, n_combo=0, cells_per_group=20, n_control=100,
                   n_cell_types=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').fit_scale()
    a, b = [c for c in data.conditions if c.startswith('REG')][:2]  # two single knockdowns of unmeasured regulators
    steps = dict(mask_steps=1) if cls is not Departures else {}
    got = {}
    for ident in (False, True):
        model = cls.from_preset('plain', seed=0, device='cpu', progress=False, graph=[coexpression(0.3)], steps=2,
                                target_identity=ident, **steps).fit(data)
        ei = model.graph_.edge_index
        ei = ei[:, ei[0] != ei[1]]  # self-loops aside
        assert not any((ei == model.graph_.index[t]).any() for t in (a, b))  # both isolated nodes
        oa, ob = _denoiser_outputs(model, [a, b])
        got[ident] = float((oa - ob).abs().max())
    assert got[False] == 0.0, got  # the defect: the same output for two different trained targets
    assert got[True] > 1e-6, got  # float32 round-off on identical inputs is exactly 0 here (same computation)


def test_departures_residual_decoding_cancels_what_the_condition_does_not_change():
    """`decode_residual` (ours): control cell + bridge(target) - bridge(control), both chains driven by the same noise.
    Known answer: if the network ignores the perturbation, whatever it does to the cell (here a z-dependent endpoint
    and the bridge noise) cancels, and the prediction is the control cells themselves; without the option it is not."""
    sim = simulate(seed=0, n_genes=60, n_regulators=4, n_single=4, n_combo=0, cells_per_group=10, n_control=40,
                   n_cell_types=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').fit_scale()
    model = Departures.from_preset('plain', seed=0, device='cpu', progress=False, graph=[coexpression(0.3)], steps=1,
                                   use_discrete=False).fit(data)
    model.net_.end = lambda z, t, ct, pert, x0: 0.7 * z + 0.3 * x0 + 0.5 * torch.sin(z)  # ignores pert
    x = torch.as_tensor(data.dense(np.flatnonzero(data.obs.control.to_numpy())[:16]))
    cond = data.vocab.index(data.conditions[0])
    out = {}
    for res in (False, True):
        model.config.decode_residual = res
        out[res] = model._sample_cells(x, 0, cond, float('nan'), 'knockdown', torch.Generator().manual_seed(0))
    assert torch.allclose(out[True], x.clamp(min=0), atol=1e-6)
    assert (out[False] - x).abs().max() > 0.05


def test_config_choices_fail_when_built():
    """Issue 15, item 4: an option with a fixed set of values is checked when the config is built (a `mask_strategy`
    typo used to train both networks first, then fail), with a 'did you mean'."""
    from perturbdiff.models import BridgeConfig, DDIBConfig
    with pytest.raises(ValueError, match="mask_strategy='coherant' is not one of .* Did you mean 'coherent'"):
        DDIBConfig(mask_strategy='coherant')
    with pytest.raises(ValueError, match="zero_loss='al'"):
        Unlasting.from_preset('quick', zero_loss='al')
    with pytest.raises(ValueError, match="schedule='cosin'"):
        Doloris.from_preset('paper', schedule='cosin')
    with pytest.raises(ValueError, match="pairing='sinkorn'.*Did you mean 'sinkhorn'"):
        Departures.from_preset('quick', pairing='sinkorn')
    with pytest.raises(ValueError, match="cost='l2'"):
        BridgeConfig(cost='l2')


@pytest.mark.parametrize('cls', [Unlasting, Doloris, Departures])
def test_generate_controls(cls):
    """Ladder step 0's generator (`generate_controls`): the model's own control cells of a cell type, log1p, finite and
    non-negative, the same for the same seed and different for another; an unknown cell type is refused by name."""
    sim = simulate(seed=0, n_genes=40, n_regulators=2, n_single=3, n_combo=0, cells_per_group=8, n_control=30,
                   n_cell_types=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').fit_scale()
        model = cls.from_preset('quick', seed=0, device='cpu', progress=False, graph=[coexpression(0.3)],
                                steps=2).fit(data)
    ct = data.cell_types[0]
    a, b, c = (model.generate_controls(ct, 12, seed=s) for s in (0, 0, 1))
    assert a.shape == (12, data.n_genes) and np.isfinite(a).all() and (a >= 0).all()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="no training control cells"):
        model.generate_controls('no such type', 3)
    if cls is Departures: return
    # DDIB: the denoiser's cells, or those cells with zeros drawn at the training controls' expression rates (07_ddib)
    raw, rated = (model.generate_controls(ct, 200, seed=0, zeros=z) for z in ('none', 'control_rate'))
    kept = rated > 0
    assert np.array_equal(rated[kept], raw[kept]) and (rated[~kept] == 0).all()  # entries kept as they were, or zeroed
    expressed = (data.dense(data.control_rows(ct)) > 0).mean(0)
    assert not kept[:, expressed == 0].any()  # a gene never expressed in the controls is never expressed in their
                                              # copies
    auto = model.generate_controls(ct, 200, seed=0)  # quick presets regress zeros themselves: 'auto' adds no zero model
    assert np.array_equal(auto, raw) and model.config.zero_loss == 'all'
    with pytest.raises(ValueError, match="zeros='rate' is not one of"):
        model.generate_controls(ct, 3, zeros='rate')


def test_paper_presets_match_the_papers():
    """Issue 16: the `paper` presets hold what the papers state and `authors_code` what the authors' code does
    (perturbdiff.papers); the schedule of the learning rate reaches the trainer."""
    from perturbdiff.papers import FAMILIES, paper_drift
    assert [d for fam in FAMILIES for d in paper_drift(fam)] == []
    assert Doloris.from_preset('paper', device='cpu').train_config(steps=1).schedule == 'constant'
    assert Doloris.from_preset('authors_code', device='cpu').train_config(steps=1).schedule == 'linear'
    with pytest.raises(ValueError, match="lr_schedule='const'"):
        Departures.from_preset('paper', lr_schedule='const')


@pytest.mark.parametrize('cls', [Unlasting, Doloris], ids=lambda c: c.__name__)
def test_paper_preset_trains_on_the_full_chain(screen, cls):
    """The papers train on all T = 500 steps, so a `paper` model samples with more steps than the 50 it defaults to
    (Doloris' Fig. 7 uses 70); the authors' code trains on the 50 respaced steps and refuses 70."""
    _, split, prior = screen
    opts = dict(seed=0, device='cpu', progress=False, graph=prior, **{**TINY[cls.__name__], 'sampling_steps': 50})
    paper = cls.from_preset('paper', **opts).fit(split.train)
    assert paper.sched_train_.n_steps == 500 and paper.sampling_schedule(70).n_steps == 70
    assert np.isfinite(paper.predict(split.test, n_cells=4, seed=0, sampling_steps=70).X).all()
    code = cls.from_preset('authors_code', **opts).fit(split.train)
    assert code.sched_train_.n_steps == 50
    with pytest.raises(ValueError, match='50-step chain'):
        code.sampling_schedule(70)


def test_unlasting_vote_masks_differ_within_a_group(screen):
    """Unlasting eq. 2 (the paper preset): masks drawn from the votes of K control inputs differ between the cells of a
    group where the votes split; the authors' mean-then-threshold masks agree on more genes across a group."""
    _, split, prior = screen
    model = Unlasting.from_preset('paper', seed=0, device='cpu', progress=False, graph=prior,
                                  **TINY['Unlasting']).fit(split.train)
    assert model.config.mask_aggregate == 'vote'
    train, ct = split.train, split.train.cell_types[0]
    ctrl = train.control_rows(ct)[:60]
    def unanimous(aggregate):
        "Share of (group, gene) entries on in all 60 cells of the group or in none."
        model.config.mask_aggregate = aggregate
        on = [model.mask_.masks(model, ctrl, ct, pd.Series(dict(condition=c, dose=np.nan, mode='knockdown'), name=c),
                                seed=0).mean(0) for c in split.test.conditions]
        return float(np.isin(np.stack(on), (0.0, 1.0)).mean())
    vote, mean = unanimous('vote'), unanimous('mean')
    print(f"unanimous entries: vote {vote:.3f}, mean {mean:.3f}")
    assert vote < mean, (vote, mean)


@pytest.mark.parametrize('continuous_loss', ['expressed', 'all'])
def test_departures_continuous_loss_entries(screen, monkeypatch, continuous_loss):
    """The paper's "w/o discrete bridge" trains the continuous bridge on every entry (`continuous_loss='all'`); with
    the discrete bridge only expressed entries (x1 > 0) enter its MSE."""
    import perturbdiff.bridges as br
    _, split, prior = screen
    masks, real = [], br.masked_mse
    def spy(pred, target, mask):
        masks.append((bool(mask.all()), bool(torch.equal(mask, target > 0))))
        return real(pred, target, mask)
    monkeypatch.setattr(br, 'masked_mse', spy)
    Departures.from_preset('plain', seed=0, device='cpu', progress=False, graph=prior, continuous_loss=continuous_loss,
                           use_discrete=continuous_loss == 'expressed', **TINY['Departures']).fit(split.train)
    assert len(masks) == TINY['Departures']['steps']
    want = (True, False) if continuous_loss == 'all' else (False, True)
    assert all(m == want for m in masks), masks[:3]
