"""Robustness tests of perturbdiff.metrics against straightforward scipy references (see nbs/02_metrics.ipynb)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats
from scipy.spatial.distance import cdist, pdist
import torch

from perturbdiff import metrics as M
from perturbdiff.contract import prediction_anndata, resolve_groups
from perturbdiff.data import GROUP_COL, PerturbData
from perturbdiff.datasets import simulate


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


def sparse_cells(rng, n, g, zero=0.7, scale=1.0, dtype=np.float64):
    "Non-negative, zero-heavy cells like log1p single-cell data."
    return ((rng.random((n, g)) > zero) * rng.gamma(2.0, scale, (n, g))).astype(dtype)


def edist_loop(X, Y, squared=False, unbiased=False):
    d = (lambda a, b: np.sum((a - b) ** 2)) if squared else (lambda a, b: np.sqrt(np.sum((a - b) ** 2)))
    n, m = len(X), len(Y)
    xy = sum(d(a, b) for a in X for b in Y) / (n * m)
    xx = sum(d(a, b) for a in X for b in X) / (n * (n - 1) if unbiased else n * n)
    yy = sum(d(a, b) for a in Y for b in Y) / (m * (m - 1) if unbiased else m * m)
    return 2 * xy - xx - yy


def emd_loop(X, Y):
    return np.array([scipy.stats.wasserstein_distance(X[:, g], Y[:, g]) for g in range(X.shape[1])])


# ---------------------------------------------------------------- energy distance
@pytest.mark.parametrize('n,m', [(1, 1), (2, 9), (30, 45), (64, 17)])
def test_edist_one_gene_is_scipy_squared(n, m):
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.gamma(2.0, 1.0, n), rng.gamma(2.5, 1.0, m)
    assert rel(M.energy_distance(x, y), scipy.stats.energy_distance(x, y) ** 2) < 1e-10


def test_edist_one_gene_with_ties():
    x = np.array([0, 0, 0, 1.5, 2.0, 0]); y = np.array([0, 1.5, 1.5, 3.0])
    assert rel(M.energy_distance(x, y), scipy.stats.energy_distance(x, y) ** 2) < 1e-12


@pytest.mark.parametrize('squared', [False, True])
@pytest.mark.parametrize('unbiased', [False, True])
@pytest.mark.parametrize('sqrt', [False, True])
def test_edist_options_vs_double_loop(squared, unbiased, sqrt):
    rng = np.random.default_rng(1)
    X, Y = sparse_cells(rng, 13, 7), sparse_cells(rng, 10, 7, scale=1.3)
    ref = edist_loop(X, Y, squared, unbiased)
    ref = np.sqrt(max(ref, 0)) if sqrt else ref
    assert rel(M.energy_distance(X, Y, squared=squared, unbiased=unbiased, sqrt=sqrt), ref) < 1e-10


def test_edist_conventions():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(20, 6)), rng.normal(0.5, 1.0, size=(25, 6))
    paper = 2 * cdist(X, Y).mean() - 2 * pdist(X).sum() / 20 ** 2 - 2 * pdist(Y).sum() / 25 ** 2
    authors = np.sqrt(max(0, 2 * cdist(X, Y).mean() - pdist(X).mean() - pdist(Y).mean()))
    sq = 'sqeuclidean'
    pertpy = 2 * cdist(X, Y, sq).mean() - cdist(X, X, sq).mean() - cdist(Y, Y, sq).mean()
    assert rel(M.energy_distance(X, Y), paper) < 1e-12
    assert rel(M.energy_distance(X, Y, **M.edist_options('paper')), paper) < 1e-12
    assert rel(M.energy_distance(X, Y, **M.edist_options('authors_code')), authors) < 1e-12
    assert rel(M.energy_distance(X, Y, **M.edist_options('scperturb')), pertpy) < 1e-10
    assert rel(M.energy_distance(X, Y, squared=True), 2 * np.sum((X.mean(0) - Y.mean(0)) ** 2)) < 1e-10
    assert M.edist_options(dict(squared=True)) == dict(squared=True)
    with pytest.raises(ValueError, match='Unknown E-distance convention'): M.edist_options('pertpy')
    with pytest.raises(ValueError, match='Unknown energy_distance options'): M.edist_options(dict(sqared=True))


def test_edist_biased_nonnegative_unbiased_can_be_negative():
    rng = np.random.default_rng(3)
    vals = [M.energy_distance(rng.normal(size=(8, 3)), rng.normal(size=(8, 3)), unbiased=True) for _ in range(100)]
    assert min(vals) < 0
    assert all(M.energy_distance(rng.normal(size=(8, 3)), rng.normal(size=(8, 3))) >= 0 for _ in range(50))


def test_edist_symmetric_and_zero_on_itself():
    rng = np.random.default_rng(4)
    X, Y = sparse_cells(rng, 15, 9), sparse_cells(rng, 11, 9)
    assert rel(M.energy_distance(X, Y), M.energy_distance(Y, X)) < 1e-12
    assert M.energy_distance(X, X) == 0.0


def test_edist_blocks(monkeypatch):
    "Row blocks (forced tiny) give the same sums as one block."
    rng = np.random.default_rng(5)
    X, Y = sparse_cells(rng, 53, 40), sparse_cells(rng, 37, 40, scale=1.2)
    full = M.energy_distance(X, Y)
    monkeypatch.setattr(M, 'BLOCK', 40 * 7)
    assert rel(M.energy_distance(X, Y), full) < 1e-12
    ref = 2 * cdist(X, Y).mean() - 2 * pdist(X).sum() / 53 ** 2 - 2 * pdist(Y).sum() / 37 ** 2
    assert rel(M.energy_distance(X, Y), ref) < 1e-9
    assert rel(M.mean_distance(X), pdist(X).mean()) < 1e-12


def test_edist_cancellation_offsets_and_duplicates():
    "A large common offset and duplicated cells: GEMM distances stay at 1e-9 of cdist/pdist."
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 200)) * 1e-2 + 1e3
    X[10:20] = X[0]  # duplicated cells: exact zeros
    Y = rng.normal(size=(30, 200)) * 1e-2 + 1e3
    assert rel(M.mean_distance(X, Y), cdist(X, Y).mean()) < 1e-9
    assert rel(M.mean_distance(X), pdist(X).mean()) < 1e-9
    assert M.intra_distance(np.repeat(X[:1], 6, 0)) == 0.0


def test_edist_float32_and_sparse():
    rng = np.random.default_rng(7)
    X, Y = sparse_cells(rng, 25, 30, dtype=np.float32), sparse_cells(rng, 20, 30, dtype=np.float32)
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    ref = edist_loop(X64, Y64)
    assert rel(M.energy_distance(X, Y), ref) < 1e-10
    assert rel(M.energy_distance(sp.csr_matrix(X), sp.csr_matrix(Y)), ref) < 1e-10


def test_edist_errors():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match='same genes'): M.energy_distance(X, np.ones((3, 5)))
    with pytest.raises(ValueError, match='NaN or infinite'): M.energy_distance(X, np.array([[np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError, match='NaN or infinite'): M.energy_distance(X, np.array([[np.inf, 0, 0, 0]]))
    with pytest.raises(ValueError, match='at least 2'): M.energy_distance(X, np.ones((1, 4)), unbiased=True)
    with pytest.raises(ValueError, match='at least 1'): M.energy_distance(X, np.ones((0, 4)))


def test_intra_distance():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(12, 5))
    assert rel(M.intra_distance(X), pdist(X).mean()) < 1e-12
    assert rel(M.intra_distance(X, squared=True), pdist(X, 'sqeuclidean').mean()) < 1e-12


# ---------------------------------------------------------------- EMD
@pytest.mark.parametrize('n,m', [(1, 1), (1, 6), (6, 1), (7, 7), (40, 31), (31, 40), (120, 80), (64, 48)])
@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_emd_vs_scipy_loop(n, m, dtype):
    rng = np.random.default_rng(n * 1000 + m)
    X, Y = sparse_cells(rng, n, 25, dtype=dtype), sparse_cells(rng, m, 25, zero=0.5, scale=1.4, dtype=dtype)
    ref = emd_loop(X, Y)
    got = M.emd_per_gene(X, Y)
    nz = ref > 0
    assert np.all(got[~nz] == 0) and rel(got[nz], ref[nz]) < 1e-9
    assert rel(M.emd(X, Y), ref.mean()) < 1e-9


@pytest.mark.parametrize('chunk', [1, 3, 8, 1000])
def test_emd_chunks(chunk):
    rng = np.random.default_rng(11)
    X, Y = sparse_cells(rng, 30, 17), sparse_cells(rng, 22, 17)
    assert rel(M.emd_per_gene(X, Y, chunk=chunk), emd_loop(X, Y)) < 1e-9


def test_emd_properties():
    rng = np.random.default_rng(12)
    X = sparse_cells(rng, 30, 10)
    assert M.emd(X, X) == 0.0
    assert M.emd(X, X[rng.permutation(30)]) == 0.0  # order of cells does not matter
    assert rel(M.emd(X, X + 0.5), 0.5) < 1e-12  # a constant shift moves every marginal by 0.5
    assert M.emd(X, np.repeat(X, 3, 0)) == 0.0  # replicating cells changes nothing
    with pytest.raises(ValueError, match='same genes'): M.emd(X, X[:, :3])
    with pytest.raises(ValueError, match='NaN'): M.emd(X, np.full((2, 10), np.nan))


def test_emd_large_values_and_negatives():
    rng = np.random.default_rng(13)
    X, Y = rng.normal(100, 5, (50, 8)), rng.normal(101, 3, (45, 8))
    assert rel(M.emd_per_gene(X, Y), emd_loop(X, Y)) < 1e-9


def test_quantile_grid_weights_sum_to_one():
    for n, m in [(1, 1), (3, 7), (300, 250), (97, 89)]:
        a, b, w = M.quantile_grid(n, m)
        assert abs(w.sum() - 1) < 1e-12 and a.max() == n - 1 and b.max() == m - 1 and len(w) <= n + m - 1


# ---------------------------------------------------------------- RMSE, PCC
def test_rmse_and_activation_pcc():
    rng = np.random.default_rng(14)
    X, Y = sparse_cells(rng, 20, 12), sparse_cells(rng, 30, 12, zero=0.4)
    assert rel(M.rmse(X, Y), np.sqrt(np.mean((X.mean(0) - Y.mean(0)) ** 2))) < 1e-12
    assert rel(M.activation_pcc(X, Y), scipy.stats.pearsonr((X > 0).mean(0), (Y > 0).mean(0))[0]) < 1e-12
    assert np.isnan(M.activation_pcc(np.ones((4, 12)), Y))
    assert np.isnan(M.activation_pcc(X[:, :1], Y[:, :1]))
    np.testing.assert_array_equal(M.activation_prob(np.array([[0, 1.0], [2.0, 0]])), [0.5, 0.5])


# ---------------------------------------------------------------- DE genes
def test_welch_t_vs_scipy():
    rng = np.random.default_rng(15)
    A, B = rng.normal(size=(30, 8)), rng.normal(0.3, 2.0, size=(45, 8))
    assert rel(M.welch_t(A, B), scipy.stats.ttest_ind(A, B, equal_var=False).statistic) < 1e-10
    C = np.zeros((10, 3)); C[:, 2] = 1.0
    t = M.welch_t(C, np.zeros((12, 3)))
    assert t[0] == 0 and t[1] == 0 and np.isinf(t[2])  # 0/0 -> 0 as scanpy; a jump with no variance -> inf
    # ties: gene order
    assert M.rank_genes(np.array([1.0, -3.0, 3.0, 0.5]), ['a', 'b', 'c', 'd']) == ['b', 'c', 'a', 'd']


def test_top_de_restricts_before_topk():
    genes = pd.Index(['g1', 'g2', 'g3', 'g4'])
    np.testing.assert_array_equal(M.top_de(['x', 'g3', 'y', 'g1', 'g4'], genes, 2), [2, 0])
    assert len(M.top_de(['x', 'y'], genes, 20)) == 0


def _gears_like():
    X = np.abs(np.random.default_rng(0).normal(size=(6, 4))).astype(np.float32)
    a = ad.AnnData(X, obs=pd.DataFrame({'condition': ['ctrl'] * 2 + ['A+ctrl'] * 2 + ['A+B'] * 2,
                                        'cell_type': ['K562_x'] * 6}, index=[f'c{i}' for i in range(6)]),
                   var=pd.DataFrame({'gene_name': ['A', 'B', 'C', 'D']},
                                    index=[f'ENSG0000000000{i}' for i in range(4)]))
    a.uns['rank_genes_groups_cov_all'] = {'K562_x_A+ctrl_1+1': np.array(['ENSG00000000002', 'ENSG00000000000']),
                                          'K562_x_A+B_1+1': np.array(['ENSG00000000003', 'ENSG00000000001'])}
    return a


def test_gears_de_genes_adapter():
    a = _gears_like()
    de = M.gears_de_genes(a)
    assert de == {'A|K562_x|': ['C', 'A'], 'A+B|K562_x|': ['D', 'B']}  # cell type with '_', ids -> symbols
    assert set(M.gears_de_genes(a, with_dose=True)) == {'A|K562_x|1.0', 'A+B|K562_x|1.0'}
    with pytest.raises(KeyError, match='lincs_DEGs'): M.gears_de_genes(a, key='nope')
    b = a.copy(); b.uns['lincs_DEGs'] = {'K562_x_A_0.1': ['B', 'C']}
    assert M.gears_de_genes(b, key='lincs_DEGs', with_dose=True) == {'A|K562_x|0.1': ['B', 'C']}


def test_de_ranking_matches_scanpy_ttest(shared):
    sc = pytest.importorskip('scanpy')
    adm = ad.read_h5ad(shared / 'adamson_mini.h5ad')
    data = PerturbData(adm, cell_type_key='cell_type', mode='CRISPRi')
    ours = M.de_rankings(data, data)
    sc.tl.rank_genes_groups(adm, groupby='condition', reference='ctrl', rankby_abs=True, n_genes=adm.n_vars,
                            use_raw=False, method='t-test')
    names, scores = (
        pd.DataFrame(adm.uns['rank_genes_groups']['names']),
        pd.DataFrame(adm.uns['rank_genes_groups']['scores']),
    )
    sym = dict(zip(adm.var_names, adm.var.gene_name))
    for label in names.columns:
        key = f"{data.resolve(label)}|K562(?)|"
        t_sc = pd.Series(scores[label].to_numpy(), index=[sym[g] for g in names[label]])
        t_ours = M.welch_t(data.dense((data.obs.group == key).to_numpy()), data.dense(data.obs.control.to_numpy()))
        np.testing.assert_allclose(t_ours, t_sc[data.genes].to_numpy(), rtol=1e-4, atol=1e-4)
        assert set(ours[key][:40]) == set(sym[g] for g in names[label][:40])


# ---------------------------------------------------------------- evaluate / summarize
@pytest.fixture(scope='module')
def sim_task():
    data = PerturbData(simulate(n_genes=60, n_single=6, n_combo=4, cells_per_group=20, n_control=50, seed=7),
                       cell_type_key='cell_type', mode_key='perturbation_type')
    split = data.split('unseen_combo', test_frac=1.0)
    train, test = split
    rg = resolve_groups(test, train)
    ids = test.obs.group.astype(str).to_numpy()
    perfect = prediction_anndata(test.dense(), ids, rg, train, 'truth')
    X, gids = [], []
    for gid, g in rg.iterrows():
        c = train.dense((train.obs.control & (train.obs.cell_type == g.cell_type)).to_numpy())[: g.n_cells]
        X.append(c); gids += [gid] * len(c)
    ctrl = prediction_anndata(np.vstack(X), gids, rg, train, 'control')
    return split, perfect, ctrl


def test_evaluate_table(sim_task):
    split, perfect, ctrl = sim_task
    train, test = split
    res = M.evaluate(ctrl, test, train, subgroups=split.test_groups)
    assert list(res.columns[:8]) == ['group', 'condition', 'cell_type', 'dose', 'subgroup', 'n_true', 'n_pred',
                                     'edist_all']
    assert M.metric_columns(res) == [f'{m}_{s}' for m in ('edist', 'emd', 'rmse',
                                                          'pcc_act') for s in ('all', 'de20', 'de40')]
    assert len(res) == len(split.test_groups) and (res.n_true == res.n_pred).all()
    row = res.iloc[0]
    T = test.dense((test.obs.group == row.group).to_numpy()); P = ctrl.X[(ctrl.obs[GROUP_COL] == row.group).to_numpy()]
    de20 = M.top_de(M.de_rankings(test, train, [row.group])[row.group], test.genes, 20)
    assert rel(row.edist_de20, M.energy_distance(P[:, de20], T[:, de20])) < 1e-12
    assert rel(row.emd_all, emd_loop(P, T).mean()) < 1e-9
    perf = M.evaluate(perfect, test, train)
    assert (perf.edist_all == 0).all() and (perf.emd_de40 == 0).all() and (perf.rmse_all == 0).all()


def test_evaluate_options(sim_task):
    split, perfect, ctrl = sim_task
    train, test = split
    base = M.evaluate(ctrl, test, train)
    reordered = ctrl[:, ctrl.var_names[::-1]].copy()
    pd.testing.assert_frame_equal(M.evaluate(reordered, test, train), base)
    sparse = ctrl.copy(); sparse.X = sp.csr_matrix(sparse.X)
    pd.testing.assert_frame_equal(M.evaluate(sparse, test, train), base)
    sc_ = M.evaluate(ctrl, test, train, space='scaled')
    np.testing.assert_allclose(sc_.edist_all, base.edist_all / train.x_max, rtol=1e-9)
    np.testing.assert_allclose(sc_.pcc_act_de20, base.pcc_act_de20, rtol=1e-12)
    au = M.evaluate(ctrl, test, train, edist='authors_code', metrics=('edist',), n_de=(5,))
    assert list(M.metric_columns(au)) == ['edist_all', 'edist_de5']
    it = M.evaluate(ctrl, test, train, metrics=('intra',))
    assert {'intra_pred_all', 'intra_true_de40'} <= set(it.columns)
    ranked = {g: list(train.genes[::-1]) for g in base.group}
    custom = M.evaluate(ctrl, test, train, de_genes=ranked)
    idx = np.arange(train.n_genes)[::-1][:20]
    g0 = base.group[0]
    P = ctrl.X[(ctrl.obs[GROUP_COL] == g0).to_numpy()][:,
                                                       idx]; T = test.dense((test.obs.group == g0).to_numpy())[:, idx]
    assert rel(custom.rmse_de20[0], M.rmse(P, T)) < 1e-12


def test_evaluate_errors(sim_task):
    split, perfect, ctrl = sim_task
    train, test = split
    gids = ctrl.obs[GROUP_COL].astype(str)
    with pytest.raises(ValueError, match="lacks some of the truth's 60 genes"):
        M.evaluate(ctrl[:, ctrl.var_names[1:]].copy(), test, train)
    # genes the truth does not score are ignored (a prediction over all genes, truth on a subset)
    extra = ad.AnnData(np.hstack([ctrl.X, np.zeros((ctrl.n_obs, 1), np.float32)]), obs=ctrl.obs.copy(),
                       var=pd.DataFrame(index=list(ctrl.var_names) + ['EXTRA']))
    pd.testing.assert_frame_equal(M.evaluate(extra, test, train), M.evaluate(ctrl, test, train))
    dup = ctrl.copy(); dup.var_names = [ctrl.var_names[0]] + list(ctrl.var_names[:-1])
    with pytest.raises(ValueError, match='duplicated names are refused'): M.evaluate(dup, test, train)
    bad = ctrl.copy(); bad.X = bad.X.copy(); bad.X[0, 0] = np.nan
    with pytest.raises(ValueError, match='NaN'): M.evaluate(bad, test, train)
    # without our group ids, the condition column names the groups
    nog = ctrl.copy(); del nog.obs[GROUP_COL]
    pd.testing.assert_frame_equal(M.evaluate(nog, test, train), M.evaluate(ctrl, test, train))
    del nog.obs['condition']
    with pytest.raises(KeyError, match='neither'): M.evaluate(nog, test, train)
    stray = ctrl.copy(); stray.obs[GROUP_COL] = gids.replace({gids.iloc[0]: 'Q+R|type0|'}).to_numpy()
    with pytest.raises(ValueError, match='have no true cells'): M.evaluate(stray, test, train)
    part = ctrl[(gids != gids.iloc[0]).to_numpy()].copy()
    with pytest.raises(ValueError, match='no predicted cells'): M.evaluate(part, test, train)
    with pytest.raises(ValueError, match='have no true cells'): M.evaluate(ctrl, test, train, groups=['Q+R|type0|'])
    with pytest.raises(KeyError, match='No DE list'): M.evaluate(ctrl, test, train, de_genes={'nothing': ['G0001']})
    with pytest.raises(ValueError, match='Unknown metrics'): M.evaluate(ctrl, test, train, metrics=('mse',))
    with pytest.raises(ValueError, match="space must be"): M.evaluate(ctrl, test, train, space='counts')
    with pytest.raises(ValueError, match='Pass control='): M.evaluate(ctrl, test)
    with pytest.raises(TypeError, match='AnnData'): M.evaluate(ctrl.X, test, train)
    with pytest.raises(ValueError, match='control cells of cell type'): M.evaluate(ctrl, test, test)
    with pytest.raises(ValueError, match='preds is empty'): M.evaluate_models({}, test, train)


def test_evaluate_min_cells(sim_task):
    split, perfect, ctrl = sim_task
    train, test = split
    with pytest.warns(UserWarning, match='Dropping'):
        res = M.evaluate(ctrl, test, train, min_cells=10 ** 6)
    assert len(res) == 0


def test_summarize(sim_task):
    split, perfect, ctrl = sim_task
    train, test = split
    res = M.evaluate_models({'truth': perfect, 'control': ctrl}, test, train, subgroups=split.test_groups)
    assert list(res.columns[:2]) == ['model', 'group'] and set(res.model) == {'truth', 'control'}
    tab = M.summarize(res)
    c = res[res.model == 'control']
    assert rel(tab.loc['control', ('emd_de20', 'mean')], c.emd_de20.mean()) < 1e-12
    assert rel(tab.loc['control', ('emd_de20', 'std')], np.std(c.emd_de20.to_numpy())) < 1e-12  # ddof 0
    assert tab.loc['truth', ('edist_all', 'mean')] == 0 and tab['n_groups'].tolist() == [len(c)] * 2
    txt = M.summarize(res, as_text=True, digits=2)
    assert txt.loc['truth', 'edist_all'] == '0.00 ± 0.00'
    by = M.summarize(res, by=('model', 'subgroup'))
    assert by.index.names == ['model', 'subgroup']
    one = M.summarize(M.evaluate(ctrl, test, train))  # no model column: one row
    assert len(one) == 1
    nan = res.copy(); nan.loc[nan.index[0], 'pcc_act_de20'] = np.nan
    assert np.isfinite(M.summarize(nan).loc[:, ('pcc_act_de20', 'mean')]).all()  # NaN skipped
    with pytest.raises(KeyError, match='not columns'): M.summarize(res, metrics=['edist_de99'])


def test_snr():
    data = PerturbData(simulate(n_genes=80, n_single=8, n_combo=0, cells_per_group=25, n_control=60, seed=9),
                       cell_type_key='cell_type', mode_key='perturbation_type')
    tab = M.snr(data, sizes=(10, None))
    assert set(tab.columns) == {'cell_type', 'k', 'n_groups', 'between', 'within', 'snr'}
    for _, t in tab.groupby('cell_type'): assert t.snr.iloc[0] > t.snr.iloc[1]
    tb = M.snr(data, sizes=(5, None), ranking='between')
    assert (tb.groupby('cell_type').snr.first() >= tb.groupby('cell_type').snr.last()).all()
    assert len(M.snr(data, sizes=(3,), ranking=list(data.genes[:3]))) == 2
    with pytest.raises(ValueError, match="ranking must be"): M.snr(data, ranking='variance')


def test_snr_hvg():
    "Doloris fig. 8 reading: brute force over k on random cells (sparse input too), the reference, the errors."
    rng = np.random.default_rng(4)
    X = sparse_cells(rng, 40, 12).astype(np.float32)
    cond = ['control'] * 10 + ['A'] * 12 + ['B'] * 17 + ['C']  # C: one cell, counted in the variance, not a group
    obs = pd.DataFrame({'condition': cond}, index=[f'c{i}' for i in range(40)])
    var = pd.DataFrame(index=[f'g{j}' for j in range(12)])
    data = PerturbData(ad.AnnData(sp.csr_matrix(X), obs=obs, var=var), kind='label', space='log1p')
    tab = M.snr_hvg(data, sizes=range(1, 13))
    order = np.argsort(-X.astype(np.float64).var(0), kind='stable')
    ctrl = X[:10].astype(np.float64).mean(0)
    for k in range(1, 13):
        S, ratios = order[:k], []
        for lo, hi in ((10, 22), (22, 39)):
            G = X[lo:hi].astype(np.float64)[:, S]
            ratios.append(np.linalg.norm(G.mean(0) - ctrl[S]) / np.linalg.norm(G - G.mean(0), axis=1).mean())
        assert abs(tab.snr.iloc[k - 1] - np.mean(ratios)) < 1e-10 * np.mean(ratios)
    assert (tab.k_ref == 12).all() and tab.relative.iloc[-1] == 1.0 and (tab.n_groups == 2).all()
    with pytest.raises(KeyError, match='not measured'): M.snr_hvg(data, hvg=['g1', 'x'])
    with pytest.raises(ValueError, match='k >= 1'): M.snr_hvg(data, sizes=(-1,))


def test_norman_baselines_table(shared):
    from perturbdiff.baselines import AdditiveBaseline, ControlBaseline, LinearBaseline, MeanBaseline
    pb = ad.read_h5ad(shared / 'perturbench_devel.h5ad')
    norman = PerturbData(pb[pb.obs.dataset == 'norman19'], cell_type_key='cell_type', mode='CRISPRa')
    split = norman.split('unseen_combo', test_frac=1.0, seed=0)
    train, test = split
    preds = {m.name: m.fit(train).predict(test) for m in (ControlBaseline(), MeanBaseline(), AdditiveBaseline(),
                                                          LinearBaseline())}
    res = M.evaluate_models(preds, test, train, subgroups=split.test_groups)
    assert len(res) == 4 * 15
    tab = M.summarize(res, by=('model', 'subgroup'))
    assert tab.loc[('additive', 'seen2'), ('edist_de20', 'mean')] < tab.loc[('control', 'seen2'),
                                                                            ('edist_de20', 'mean')]


# ---------------------------------------------------------------- E-distance: sign and zero on every CPU (issue 14)
def test_edist_exact_zero_and_sign_on_random_matrices():
    """Biased E-distance: exactly 0.0 for equal empirical distributions, never negative, whatever BLAS kernel
    the CPU picks (on AVX-512 the raw formula gave E(X, X) = +-1e-15 for about 4% of seeds)."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n, g = int(rng.integers(1, 70)), int(rng.integers(1, 90))
        X = sparse_cells(rng, n, g, zero=rng.uniform(0.0, 0.9), scale=rng.uniform(0.1, 10.0))
        if seed % 3 == 0 and n > 2: X[n // 2:] = X[0]  # duplicated cells
        if seed % 4 == 1: X += 1e3  # a large common offset: cancellation in the GEMM form
        if seed % 5 == 2: X = X.astype(np.float32)
        perm = X[rng.permutation(n)]
        for opts in (dict(), dict(squared=True), dict(sqrt=True)):
            assert M.energy_distance(X, X, **opts) == 0.0, (seed, opts)
            assert M.energy_distance(X, X.copy(), **opts) == 0.0, (seed, opts)
            assert M.energy_distance(perm, X, **opts) == 0.0, (seed, opts)  # the same cells in another order
            assert M.energy_distance(X, np.repeat(X, 2, 0), **opts) == 0.0, (seed, opts)  # the same distribution
        assert M.energy_distance(X.astype(np.float64), X.astype(np.float32).astype(np.float64)) >= 0.0
        Y = X.astype(np.float64).copy(); Y[0, 0] += 1e-9 * max(1.0, abs(Y[0, 0]))  # nearly the same cells
        Z = sparse_cells(rng, int(rng.integers(1, 50)), g)
        for A, B in ((X, Y), (Y, X), (X, Z), (Z, perm)):
            for sq in (False, True):
                e = M.energy_distance(A, B, squared=sq)
                assert e >= 0.0 and not np.signbit(e), (seed, sq, e)
        if n > 1:  # the unbiased form is not clamped: on itself it is -2 * (mean distinct-pair distance) / n
            d = M.mean_distance(X)
            assert abs(M.energy_distance(X, X, unbiased=True) + 2 * d / n) <= 1e-12 * max(d, 1e-300)


def test_same_distribution():
    rng = np.random.default_rng(21)
    X = sparse_cells(rng, 12, 7)
    assert M.same_distribution(X, X[::-1]) and M.same_distribution(X, np.vstack([X, X[rng.permutation(12)]]))
    assert M.same_distribution(sp.csr_matrix(X.astype(np.float32)), X.astype(np.float32).astype(np.float64))
    assert M.same_distribution(np.array([[0.0, 1.0]]), np.array([[-0.0, 1.0]]))  # -0.0 == 0.0
    assert not M.same_distribution(X, X[1:]) and not M.same_distribution(X, np.vstack([X, X[:1]]))
    Y = X.copy(); Y[3, 4] = np.nextafter(Y[3, 4], np.inf)  # one value one ulp away
    assert not M.same_distribution(X, Y) and M.energy_distance(X, Y) >= 0.0
    assert M.same_distribution(np.zeros((3, 0)), np.zeros((5, 0)))
    with pytest.raises(ValueError, match='same genes'): M.same_distribution(X, X[:, :3])


def test_evaluate_truth_in_any_order_scores_exactly_zero(sim_task):
    "A prediction that is the true cells, shuffled, scores edist and EMD exactly 0 in every convention."
    split, perfect, ctrl = sim_task
    train, test = split
    shuffled = perfect[np.random.default_rng(0).permutation(perfect.n_obs)].copy()
    for edist in ('paper', 'scperturb', 'authors_code'):
        res = M.evaluate(shuffled, test, train, edist=edist)
        for s in ('all', 'de20', 'de40'):
            assert (res[f'edist_{s}'] == 0.0).all() and not np.signbit(res[f'edist_{s}']).any(), (edist, s)
            assert (res[f'emd_{s}'] == 0.0).all() and (res[f'rmse_{s}'].abs() < 1e-6).all()
    res = M.evaluate_models({'truth': shuffled, 'control': ctrl}, test, train)
    assert (res.edist_all >= 0).all() and (res[res.model == 'control'].edist_all > 0).all()
    tab = M.summarize(res)
    assert tab.loc['truth', ('edist_all', 'mean')] == 0.0 and tab.loc['truth', ('edist_all', 'std')] == 0.0
    assert M.summarize(res, as_text=True).loc['truth', 'edist_de20'] == '0.000 ± 0.000'


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_exact_metrics_on_cuda_match_numpy():
    "EMD and the E-distance conventions with device='cuda' agree with the numpy path to rounding (issue 18)."
    rng = np.random.default_rng(21)
    X, Y = sparse_cells(rng, 120, 300).astype(np.float32), sparse_cells(rng, 90, 300).astype(np.float32)
    X = np.vstack([X, X[:5]])  # duplicated cells: exactly 0 apart on the device too
    assert np.max(np.abs(M.emd_per_gene(X, Y, device='cuda') - M.emd_per_gene(X, Y))) < 1e-12
    for opts in M.EDIST_CONVENTIONS.values():
        a, b = M.energy_distance(X, Y, **opts, device='cuda'), M.energy_distance(X, Y, **opts)
        assert rel(a, b) < 1e-12, (opts, a, b)
    assert rel(M.intra_distance(X, device='cuda'), M.intra_distance(X)) < 1e-12
    assert M.energy_distance(X, X[::-1], device='cuda') == 0.0
