"""Smoke tests of the experiment notebooks (nbs/2x_*.ipynb): each runs through papermill in quick mode
with the baselines on the data of this machine (the ../shared fixtures, else the simulator) and writes
its tables and figures; the Norman table equals the one `perturbdiff benchmark` writes.

The notebooks are not run by nbdev_test (their title cell carries nbdev's `skip_exec: true`
front matter); this file is where they run."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
EXPERIMENTS = sorted(p.stem for p in NBS.glob('2[0-9]_*.ipynb'))
PARAMETERS = {'data_path', 'quick', 'device', 'seed', 'out_dir', 'models', 'steps', 'sampling_steps'}
BASELINES = ['control', 'mean', 'additive', 'linear']
FIGURES = {'metrics.png', 'violins.png', 'pca.png', 'activation.png', 'diversity.png'}


def execute(name: str, out_dir: Path, **params) -> Path:
    "Run nbs/<name>.ipynb with papermill (cwd = repo root, as the README's command) and return its output notebook."
    pm = pytest.importorskip('papermill')
    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f'{name}.out.ipynb'
    params = {'quick': True, 'device': 'cpu', 'out_dir': str(out_dir), **params}  # quick unless a test says otherwise
    pm.execute_notebook(str(NBS / f'{name}.ipynb'), str(out_nb), parameters=params, cwd=str(ROOT),
                        kernel_name='python3', progress_bar=False)
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
    assigned = {
        l.split('=')[0].strip() for l in ''.join(first['source']).splitlines() if '=' in l and not l.startswith(' ')
    }
    assert PARAMETERS <= assigned, PARAMETERS - assigned
    title = next(c for c in nb['cells'] if c['cell_type'] == 'markdown')
    assert ''.join(title['source']).lstrip().startswith('# ') and '- skip_exec: true' in ''.join(title['source'])
    code = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
    assert '#| export' not in code and '#| default_exp' not in code
    imports = {l.split()[1].split('.')[0] for l in code.splitlines() if l.startswith(('import ', 'from '))}
    assert imports <= {'perturbdiff', 'pathlib', 'numpy', 'pandas', 'matplotlib', 'IPython'}, imports


def test_nbdev_test_skips_experiments(monkeypatch):
    "nbdev_test honours skip_exec: running it on an experiment notebook executes nothing."
    from nbdev.test import test_nb
    monkeypatch.chdir(ROOT); monkeypatch.setenv('IN_TEST', '1')  # test_nb sets IN_TEST; keep it out of other tests
    ok, seconds = test_nb(NBS / '21_norman.ipynb')
    assert ok and seconds == 0


def test_adamson(tmp_path, shared):
    out_nb = execute('20_adamson', tmp_path, data_path=str(shared / 'adamson_mini.h5ad'), models=','.join(BASELINES))
    res = pd.read_csv(tmp_path / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES and res.group.nunique() == 3  # 30% of 10 knockdowns
    assert list(pd.read_csv(tmp_path / 'summary.csv', index_col=0).index) == BASELINES
    assert FIGURES <= {p.name for p in tmp_path.glob('*.png')} and images_shown(out_nb) == len(FIGURES)


def test_adamson_synthetic(tmp_path):
    "The same notebook on the simulator (no ../shared needed)."
    execute('20_adamson', tmp_path, data_path='synthetic', models='control,additive')
    assert list(pd.read_csv(tmp_path / 'summary.csv', index_col=0).index) == ['control', 'additive']



# The trained models in 20-22: tiny networks and step counts (the plumbing, not the science), with the sampler-step
# parameter every trained model must take, in the quick and in the paper preset (with the papers' options per data set).
def tiny_trained():
    return {**TINY_NETS, **{m: {**TINY_NETS[m], 'mask_steps': 2} for m in ('unlasting', 'doloris')}}


def test_adamson_trained_models(tmp_path):
    execute('20_adamson', tmp_path, data_path='synthetic', models='unlasting,doloris,departures,additive', steps=3,
            sampling_steps=5, overrides=tiny_trained())
    summary = pd.read_csv(tmp_path / 'summary.csv', index_col=0)
    assert list(summary.index) == ['unlasting', 'doloris', 'departures', 'additive']
    assert np.isfinite(summary.filter(like='_mean').to_numpy()).all()



def test_norman_paper_preset_mask_figure(tmp_path):
    "quick=False on the simulator: Doloris with the paper preset has a mask model, whose probabilities are shown."
    out_nb = execute('21_norman', tmp_path, data_path='synthetic', quick=False, models='doloris,additive', steps=3,
                     sampling_steps=5, overrides=tiny_trained())
    assert {'mask_probabilities.png', 'activation_states.png'} <= {p.name for p in tmp_path.glob('*.png')}
    assert images_shown(out_nb) >= 7

def test_sciplex3_paper_preset(tmp_path):
    "quick=False: the paper presets (full-chain training, vote masks, minibatch OT, sci-Plex3's step counts)."
    execute('22_sciplex3', tmp_path, data_path='synthetic-drug', quick=False, models='unlasting,doloris,departures',
            steps=3, sampling_steps=5, overrides=tiny_trained())
    for task in ('unseen_context', 'ood_drug'):
        res = pd.read_csv(tmp_path / task / 'results.csv')
        assert list(pd.unique(res.model)) == ['unlasting', 'doloris', 'departures'] and np.isfinite(res.edist_all).all()

def test_norman_same_table_as_cli(tmp_path, shared):
    "The README's papermill command (baselines here) and `perturbdiff benchmark` write the same tables."
    from perturbdiff.cli import main
    data = str(shared / 'perturbench_devel.h5ad')
    out_nb = execute('21_norman', tmp_path / 'nb', data_path=data, models=','.join(BASELINES))
    res = pd.read_csv(tmp_path / 'nb' / 'results.csv')
    assert list(pd.unique(res.model)) == BASELINES and res.group.nunique() == 15
    assert {'edist_de20', 'edist_authors_de20'} <= set(res.columns)  # eq. 20 and the authors' code side by side
    assert set(res.subgroup) == {'seen0', 'seen1', 'seen2'}
    assert (tmp_path / 'nb' / 'summary_by_subgroup.csv').exists() and (tmp_path / 'nb' / 'diversity.csv').exists()
    lad = pd.read_csv(tmp_path / 'nb' / 'ladder.csv', index_col=0)  # the learnability ladder: additive knows the
                                                                    # singles
    assert lad.loc['additive', 'step 1: training singles'] < lad.loc['mean', 'step 1: training singles']
    assert lad.loc['floor (two halves of the truth)'].notna().all()
    shifts = pd.read_csv(tmp_path / 'nb' / 'shifts.csv')
    assert list(pd.unique(shifts.model)) == BASELINES and {'pcc_delta_de20', 'delta_ratio_de40'} <= set(shifts.columns)
    assert (shifts[shifts.model == 'additive'].delta_ratio_de20 > 0).all()
    figures = FIGURES | {'activation_states.png'}  # Departures fig. 5 (PCA in quick mode)
    assert figures <= {p.name for p in (tmp_path / 'nb').glob('*.png')} and images_shown(out_nb) == len(figures)
    assert main(['benchmark', '--data', data, '--subset', 'dataset=norman19', '--cell-type-key', 'cell_type', '--mode',
                 'CRISPRa', '--split', 'unseen_combo', '--test-frac', '1', '--models', ','.join(BASELINES),
                 '--metrics', 'edist,emd,rmse,pcc_act,edist_authors',  # the notebook's: both E-distance conventions
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
    # one split, one fit (the papers): the OOD drugs are not unseen contexts, and both tasks come from one table
    assert set(ood.condition).isdisjoint(ctx.condition) and ood.condition.nunique() == 4  # 30% of 12 drugs, drawn
    both = pd.read_csv(tmp_path / 'both_tasks' / 'results.csv')
    assert set(both.group) == set(ood.group) | set(ctx.group) and len(both) == len(ood) + len(ctx)
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert {'metrics_unseen_context.png', 'metrics_ood_drug.png', 'violins.png', 'pca.png'} <= pngs
    assert images_shown(out_nb) >= 6


# The trained-model experiments (23-25) run with tiny networks and step counts on a tiny simulated screen (60 genes,
# 8 singles, 4 pairs, one cell type): they check the plumbing, not the science.
TINY_STEPS = dict(steps=3, mask_steps=2, sampling_steps=5, prior='coexpression')
TINY_NETS = {'unlasting': dict(hidden=32, time_dim=16, decoder=[32], grn_dim=8, mask_hidden=16, n_control=20),
             'doloris': dict(hidden=32, time_dim=16, decoder=[32], grn_dim=8, pca_dim=4, mask_hidden=16, n_control=20),
             'departures': dict(dim=8, time_dim=16)}


@pytest.fixture(scope='module')
def tiny_screen(tmp_path_factory):
    "A tiny simulated CRISPRi screen written as an h5ad (with its ground truth in uns['simulation'])."
    import warnings
    from perturbdiff.datasets import simulate
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        sim = simulate(n_genes=60, n_regulators=6, n_cell_types=1, n_single=8, n_combo=4, cells_per_group=20,
                       n_control=80, seed=0)
    path = tmp_path_factory.mktemp('screen') / 'tiny_screen.h5ad'
    sim.write_h5ad(path)
    return path


def test_ablations(tmp_path, tiny_screen):
    "Training-time variants are fitted anew; prediction-time ones reuse the full model's fit."
    out_nb = execute('23_ablations', tmp_path, data_path=str(tiny_screen), models='unlasting,departures',
                     variants='full,mask_bernoulli,mask_unmatched,no_fill,no_ot,anchor,anchor_residual,control_pairs',
                     n_cells=10, overrides=TINY_NETS, **TINY_STEPS)
    res = pd.read_csv(tmp_path / 'results.csv')
    assert list(res.drop_duplicates(['model', 'variant'])[['model', 'variant']].itertuples(index=False, name=None)) == [
        ('unlasting', 'full'), ('unlasting', 'mask_bernoulli'), ('unlasting',
                                                                 'mask_unmatched'), ('unlasting', 'no_fill'),
        ('unlasting', 'anchor'), ('unlasting', 'anchor_residual'),
        ('departures', 'full'), ('departures', 'no_ot'), ('departures', 'control_pairs')]
    assert (res.groupby(['model', 'variant']).group.nunique() == 4).all() and (res.n_pred == 10).all()
    timing = pd.read_csv(tmp_path / 'timing.csv').set_index(['model', 'variant'])
    assert timing.loc[('unlasting', 'mask_bernoulli'), 'fit'] == 'full'
    assert timing.loc[('unlasting', 'mask_unmatched'), 'fit'] == 'full'
    assert timing.loc[('unlasting', 'no_fill'), 'fit'] == 'no_fill'
    assert timing.loc[('departures', 'no_ot'), 'fit'] == 'no_ot'
    assert timing.loc[('unlasting', 'anchor_residual'), 'fit'] == 'anchor'  # ours: one anchored fit, two decodings
    assert timing.loc[('departures', 'control_pairs'), 'fit'] == 'control_pairs'
    summary = pd.read_csv(tmp_path / 'summary.csv', index_col=[0, 1])
    assert len(summary) == 9 and {'label', 'edist_de20_mean', 'emd_de40_std', 'n_groups'} <= set(summary.columns)
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert pngs == {f'ablation_{m}_{k}.png' for m in ('unlasting', 'departures') for k in ('edist_de20', 'emd_de20')
                    } | {'diversity_unlasting.png'}  # Doloris fig. 2, per DDIB model
    assert {'intra_pred_all', 'intra_true_all'} <= set(res.columns)
    assert images_shown(out_nb) == len(pngs)



def test_ablations_as_the_papers_define_them(tmp_path, tiny_screen):
    "Issue 16: 'w/o mask model' and 'w/o discrete bridge' are fitted anew (on every entry); OT with a plain cost runs."
    execute('23_ablations', tmp_path, data_path=str(tiny_screen), models='doloris,departures',
            variants='full,no_mask,mask_dropped,no_discrete,ot_plain', n_cells=10, overrides=TINY_NETS, **TINY_STEPS)
    timing = pd.read_csv(tmp_path / 'timing.csv').set_index(['model', 'variant'])
    assert timing.loc[('doloris', 'no_mask'), 'fit'] == 'no_mask'
    assert timing.loc[('doloris', 'mask_dropped'), 'fit'] == 'full'
    assert timing.loc[('departures', 'no_discrete'), 'fit'] == 'no_discrete'
    assert timing.loc[('departures', 'ot_plain'), 'fit'] == 'ot_plain'
    res = pd.read_csv(tmp_path / 'results.csv')
    assert np.isfinite(res.edist_all).all() and (res.groupby(['model', 'variant']).group.nunique() == 4).all()

def test_ablation_reuse_is_exact(tiny_screen):
    """23_ablations predicts the mask variants with the full model's fit, changing config fields at prediction only;
    that must equal fitting the variant: the same denoiser and the same masks."""
    import warnings
    import anndata as ad
    import numpy as np
    import torch
    from perturbdiff import api
    from perturbdiff.priors import build_graph, coexpression
    data = api.load_data(ad.read_h5ad(tiny_screen), cell_type_key='cell_type', mode_key='perturbation_type')
    split = api.make_split(data, 'unseen_combo', test_frac=1.0)
    graph = build_graph(split.train, [coexpression(0.3)])
    opts = dict(graph=graph, steps=3, mask_steps=2, sampling_steps=5, **TINY_NETS['doloris'])
    def fit(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return api.make_model('doloris', 'plain', 0, 'cpu', {'doloris': {**opts, **kw}},
                                  progress=False).fit(split.train)
    def predict_with(model, **kw):  # as in the notebook
        old = {k: getattr(model.config, k) for k in kw}
        for k, v in kw.items(): setattr(model.config, k, v)
        try: return model.predict(split.test, n_cells=10, seed=0).X
        finally:
            for k, v in old.items(): setattr(model.config, k, v)
    full, bern, no_mask = fit(), fit(mask_strategy='bernoulli'), fit(use_mask=False)
    assert full.config.mask_strategy == 'coherent'
    for a, b in zip(full.net_.state_dict().values(), no_mask.net_.state_dict().values()): assert torch.equal(a, b)
    assert np.array_equal(predict_with(full, mask_strategy='bernoulli'), predict_with(bern))
    assert np.array_equal(predict_with(bern, mask_strategy='coherent'), predict_with(full))
    assert np.array_equal(predict_with(full, use_mask=False), predict_with(no_mask))
    assert not np.array_equal(predict_with(full, use_mask=False), predict_with(full))


def test_nfe(tmp_path, tiny_screen):
    out_nb = execute('24_nfe', tmp_path, data_path=str(tiny_screen), models='doloris,departures', nfe_steps='2,5',
                     n_cells=10, reconstruction_cells=20, overrides=TINY_NETS, **TINY_STEPS)
    res = pd.read_csv(tmp_path / 'results.csv')
    per = res.groupby(['model', 'steps']).agg(nfe=('nfe', 'first'), groups=('group', 'nunique'),
                                              cells=('n_pred', 'sum'))
    assert list(per.index) == [('departures', 2), ('departures', 5), ('doloris', 2), ('doloris', 5)]
    assert (per.groups == 4).all() and (per.cells == 40).all()
    assert list(per.loc['departures', 'nfe']) == [2, 5]  # one bridge evaluation per step
    assert list(per.loc['doloris', 'nfe']) == [4, 10]  # 2(S - e): inversion + decoding; both presets enter at e = 0
    assert (res.seconds_per_cell > 0).all()
    recon = pd.read_csv(tmp_path / 'reconstruction.csv')
    assert list(recon.model) == ['doloris'] * 2 and list(recon.steps) == [2, 5] and np.isfinite(recon.chain_mae).all()
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert {'nfe_edist_de20.png', 'nfe_emd_de20.png', 'time_edist_de20.png', 'reconstruction_chain_mae.png'} <= pngs
    assert images_shown(out_nb) == len(pngs) == 6


def test_heterogeneity(tmp_path, tiny_screen):
    out_nb = execute('25_heterogeneity', tmp_path, data_path=str(tiny_screen), models='doloris,additive',
                     overrides=TINY_NETS, **{**TINY_STEPS, 'prior': 'simulator'})
    div = pd.read_csv(tmp_path / 'diversity_summary.csv', index_col=0)
    assert list(div.index) == ['doloris', 'additive'] and (div > 0).all().all()
    assert 0.8 < div.loc['additive', 'ratio_all'] < 1.25  # shifted control cells keep the controls' spread
    snr_tab = pd.read_csv(tmp_path / 'snr.csv')
    assert list(pd.unique(snr_tab.source)) == ['true', 'doloris', 'additive'] and set(snr_tab.k) == {5, 10, 20, 40, 60}
    hvg = pd.read_csv(tmp_path / 'snr_hvg.csv')  # the Doloris fig. 8 reading: k = 50 added, relative to it
    assert list(pd.unique(hvg.source)) == ['true', 'doloris', 'additive'] and set(hvg.k) == {5, 10, 20, 40, 50, 60}
    assert (hvg.k_ref == 50).all() and np.allclose(hvg[hvg.k == 50].relative, 1.0)
    bim = pd.read_csv(tmp_path / 'bimodality_summary.csv', index_col=[0, 1])
    assert set(bim.index) == {(s, b) for s in ('control cells', 'doloris', 'additive') for b in (True, False)}
    assert (bim.loc[(slice(None), True), 'pairs'] == 4 * 20).all()  # 4 test pairs x 20 bimodal genes
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert pngs == {'diversity.png', 'diversity_de20.png', 'snr.png', 'snr_relative.png', 'snr_hvg_relative.png',
                    'bimodal_fraction.png', 'bimodal_violins.png', 'activation.png'}
    assert images_shown(out_nb) == len(pngs)


def test_heterogeneity_real_data(tmp_path, shared):
    "On real data (the Norman part) there is no bimodality ground truth: the section is skipped, the rest runs."
    out_nb = execute('25_heterogeneity', tmp_path, data_path=str(shared / 'perturbench_devel.h5ad'),
                     models='control,additive')
    assert not (tmp_path / 'bimodality.csv').exists()
    assert list(pd.unique(pd.read_csv(tmp_path / 'snr.csv').source)) == ['true', 'control', 'additive']
    pngs = {p.name for p in tmp_path.glob('*.png')}
    assert {'diversity.png', 'snr.png', 'snr_hvg_relative.png', 'activation.png'} <= pngs
    assert images_shown(out_nb) == 6
