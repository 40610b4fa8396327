"""Issue #14 regressions in 00a_spaces and 00_conditions: the input-space guess (item 2) and undeclared control labels
(item 5)."""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from perturbdiff.contract import resolve_groups
from perturbdiff.spaces import InputSpaceWarning, detect_space, to_log1p
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate


# ---------------------------------------------------------------- item 2: expression space

def _counts(n_cells=60, n_genes=50, seed=0) -> np.ndarray:
    "Raw UMI counts with varying depth and a few highly expressed genes (per-cell maxima well above 30)."
    rng = np.random.default_rng(seed)
    lam = np.exp(rng.normal(0, 1.2, n_genes))[None] * rng.uniform(0.5, 2.0, n_cells)[:, None]
    lam[:, :3] *= 40
    C = rng.poisson(lam).astype(np.float64)
    C[C.sum(1) == 0, 0] = 1
    return C


def _adata(X, uns=None) -> ad.AnnData:
    n = X.shape[0]
    obs = pd.DataFrame({'condition': ['control'] * (n // 2) + ['G0001'] * (n - n // 2)},
                       index=[f'cell{i}' for i in range(n)])
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f'G{i:04d}' for i in range(X.shape[1])]))
    if uns: a.uns.update(uns)
    return a


def _build(a, **kw):
    "PerturbData of `a`, checking that `a` is untouched and that at most one space line was emitted."
    before = a.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        data = PerturbData(a, **kw)
    X0, X1 = before.X, a.X
    if sp.issparse(X0): assert (X0 != X1).nnz == 0, "the caller's X was modified"
    else: np.testing.assert_array_equal(X0, X1)
    assert a.obs.equals(before.obs) and a.var.equals(before.var) and set(a.uns) == set(before.uns)
    lines = [str(w.message) for w in caught if w.category.__name__ == 'InputSpaceWarning']
    return data, lines


def _norm(C, target=1e4):
    return C / C.sum(1, keepdims=True) * target


def test_log1p_with_one_large_value_not_logged_twice():
    L = np.log1p(_norm(_counts()))
    L[5, 7] = 35.0  # one implausible value must not make the whole matrix 'normalized'
    data, lines = _build(_adata(L))
    assert data.input_space == 'log1p'
    np.testing.assert_allclose(data.dense(), L.astype(np.float32))
    assert data.dense().max() == pytest.approx(35.0)
    assert len(lines) == 1 and 'log1p' in lines[0] and 'space=' in lines[0]


def test_log1p_hvg_subset_detected():
    "Log1p data restricted to some genes (per-cell totals of expm1 vary) are still log1p."
    L = np.log1p(_norm(_counts(n_genes=80)))[:, 20:60]
    data, _ = _build(_adata(L))
    assert data.input_space == 'log1p' and data.preprocessing == ['input detected as log1p']


def test_ambient_corrected_counts_normalised():
    C = _counts()
    rng = np.random.default_rng(1)
    A = np.clip(C - rng.uniform(0, 0.6, C.shape) * (C > 0), 0, None)  # non-integer, as SoupX / decontX output
    assert np.mean(A[A > 0] == np.round(A[A > 0])) < 0.1
    data, lines = _build(_adata(A))
    assert data.input_space == 'counts'
    np.testing.assert_allclose(data.dense(), np.log1p(_norm(A)), rtol=1e-5, atol=1e-6)
    assert len(lines) == 1 and 'counts' in lines[0]


def test_binary_counts_are_counts():
    B = (_counts() > 2).astype(np.float32)
    data, lines = _build(_adata(sp.csr_matrix(B)))
    assert data.input_space == 'counts'
    np.testing.assert_allclose(data.dense(), np.log1p(_norm(B.astype(np.float64))), rtol=1e-5, atol=1e-6)
    assert len(lines) == 1 and '0 or 1' in lines[0]


def test_normalised_unlogged_with_small_max():
    N = _norm(_counts(), target=20.0)  # normalised to 20 per cell: max <= 20, not logged
    assert N.max() <= 30
    data, _ = _build(_adata(N))
    assert data.input_space == 'normalized'
    np.testing.assert_allclose(data.dense(), np.log1p(N), rtol=1e-5, atol=1e-6)


def test_log2_data_identified_and_converted():
    N = _norm(_counts())
    data, lines = _build(_adata(np.log2(1 + N)))
    assert data.input_space == 'log2p'
    np.testing.assert_allclose(data.dense(), np.log1p(N), rtol=1e-5, atol=1e-5)
    assert len(lines) == 1 and 'log2p' in lines[0]


def test_overflowing_counts_row_raises_naming_it():
    C = _counts()
    C[3, :2] = 1e308
    with pytest.raises(ValueError, match=r"cells \[.cell3.\] overflow"):
        PerturbData(_adata(C))
    with pytest.raises(ValueError, match=r"cells \[.cell3.\] overflow"):
        PerturbData(_adata(C), space='counts')
    with pytest.raises(ValueError, match=r"NaN or infinite.*cell4"):
        D = _counts(); D[4, 1] = np.inf; PerturbData(_adata(D))


def test_undecidable_refused_naming_space_option():
    rng = np.random.default_rng(2)
    X = rng.gamma(0.5, 2.0, (60, 40)) * (rng.random((60, 40)) < 0.5)  # smooth, non-integer, small: no scale fits
    with pytest.raises(ValueError, match=r"space=.*--space"):
        PerturbData(_adata(X))
    data, lines = _build(_adata(X), space='log1p')  # stating the space always works
    assert data.input_space == 'log1p' and lines == []
    np.testing.assert_allclose(data.dense(), X.astype(np.float32))


def test_uns_log1p_used_and_stale_mark_refused():
    L = np.log1p(_norm(_counts()))
    rng = np.random.default_rng(3)
    smooth = L * rng.uniform(0.9, 1.1, L.shape)  # no longer quantised: only the mark decides
    data, lines = _build(_adata(smooth, uns={'log1p': {'base': None}}))
    assert data.input_space == 'log1p' and "uns['log1p']" in lines[0]
    with pytest.raises(ValueError, match=r"uns\['log1p'\].*space="):  # counts copied back into X under the mark
        PerturbData(_adata(_counts(), uns={'log1p': {'base': None}}))
    assert PerturbData(_adata(_counts(), uns={'log1p': {'base': None}}), space='counts').input_space == 'counts'
    # perturbdiff's own mark on predicted cells (continuous values, no per-cell unit) is read the same way
    rng_pred = np.random.default_rng(4).gamma(0.5, 2.0, (60, 40))
    pred, lines = _build(_adata(rng_pred, uns={'perturbdiff': {'model': 'x', 'space': 'log1p'}}))
    assert pred.input_space == 'log1p' and "uns['perturbdiff']" in lines[0]
    # the mark describes X only: a counts layer is read as counts
    a = _adata(L, uns={'log1p': {'base': None}}); a.layers['counts'] = _counts()
    assert _build(a, layer='counts')[0].input_space == 'counts'


def test_explicit_space_wins():
    C = _counts()
    data, lines = _build(_adata(C), space='log1p')  # wrong, but stated: used as is, no guess
    assert data.input_space == 'log1p' and lines == [] and data.preprocessing == ['input declared as log1p (space=)']
    np.testing.assert_allclose(data.dense(), C.astype(np.float32))
    L = np.log1p(_norm(C))
    assert PerturbData(_adata(L), space='normalized').input_space == 'normalized'
    with pytest.raises(ValueError, match="space must be"):
        PerturbData(_adata(C), space='raw')


def test_never_logged_twice_roundtrip():
    sim = simulate(n_genes=40, n_single=4, n_combo=0, cells_per_group=8, n_control=20, seed=0)
    a = sim.copy(); a.X = a.layers['counts'].copy()
    d1, _ = _build(a)
    again = _adata(d1.dense())
    d2, _ = _build(again)
    assert d1.input_space == 'counts' and d2.input_space == 'log1p'
    np.testing.assert_array_equal(d2.dense(), d1.dense())


def test_detect_space_function():
    C = _counts()
    assert detect_space(C, report=False) == 'counts'
    assert detect_space(np.log1p(_norm(C)), report=False) == 'log1p'
    with pytest.warns(UserWarning, match='read as counts'):
        detect_space(C)
    X, steps = to_log1p(C, 'counts')
    assert steps == ['normalize_total(target_sum=10000)', 'log1p']
    assert detect_space(X, report=False) == 'log1p' and to_log1p(X, 'log1p')[1] == []


# ---------------------------------------------------------------- item 5: control labels

def _ctrl_sim(relabel: dict, seed=0) -> ad.AnnData:
    "A simulated screen whose control cells are partly relabelled, e.g. {'NTC': 5} renames 5 control cells."
    sim = simulate(n_genes=40, n_single=4, n_combo=0, cells_per_group=8, n_control=30, n_cell_types=1, seed=seed)
    lab = sim.obs.condition.astype(str).to_numpy().copy()
    ctrl = np.flatnonzero(lab == 'control')
    i = 0
    for name, n in relabel.items():
        lab[ctrl[i:i + n]] = name; i += n
    sim.obs['condition'] = lab
    return sim


def test_undeclared_control_like_labels_refused():
    a = _ctrl_sim({'NTC': 5, 'non-targeting_0001': 5})
    with pytest.raises(ValueError, match=r"NTC.*non-targeting_0001.*look like controls.*control=.*--control"):
        PerturbData(a)


def test_several_control_labels_pooled():
    a = _ctrl_sim({'NTC': 5, 'non-targeting_0001': 5})
    data = PerturbData(a, control=['control', 'NTC', 'non-targeting_0001'])
    assert int(data.obs.control.sum()) == 30
    assert not {'NTC', 'non-targeting_0001'} & set(data.conditions)


def test_explicit_control_keeps_look_alikes_with_warning():
    a = _ctrl_sim({'NTC': 5})
    with pytest.warns(UserWarning, match=r"NTC.*kept as perturbations"):
        data = PerturbData(a, control='control')
    assert 'NTC' in data.conditions and int(data.obs.control.sum()) == 25


def test_mode_key_error_is_about_controls():
    a = _ctrl_sim({'NTC': 5})  # NTC cells carry perturbation_type 'control'
    with pytest.raises(ValueError, match=r"look like controls.*NTC"):
        PerturbData(a, mode_key='perturbation_type')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match=r"perturbation_type.*'control'.*NTC.*control="):
            PerturbData(a, control='control', mode_key='perturbation_type')
    data = PerturbData(a, control=['control', 'NTC'], mode_key='perturbation_type')
    assert int(data.obs.control.sum()) == 30


@pytest.mark.parametrize('label', ['NT', 'None'])
def test_nt_none_need_confirming(label):
    only = _ctrl_sim({label: 30})  # the only control is called NT / None
    with pytest.raises(ValueError, match=rf"No control cells.*'{label}'.*control="):
        PerturbData(only)
    assert int(PerturbData(only, control=label).obs.control.sum()) == 30
    both = _ctrl_sim({label: 10})  # next to 'control': could be a gene called NT, so it is asked for
    with pytest.raises(ValueError, match='look like controls'):
        PerturbData(both)
    with pytest.warns(UserWarning, match='kept as perturbations'):
        assert label in PerturbData(both, control='control').conditions


def test_known_conventions_unchanged():
    gears = simulate(n_genes=30, n_single=3, n_combo=2, cells_per_group=5, n_control=10, n_cell_types=1,
                     gears_style=True, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # no control warning for ctrl / A+ctrl
        warnings.filterwarnings('ignore', message='.*read as')
        data = PerturbData(gears)
        flipped = gears.copy()  # GEARS writes both 'A+ctrl' and 'ctrl+A'
        flipped.obs['condition'] = [
            f'ctrl+{c[:-5]}' if c.endswith('+ctrl') else c for c in gears.obs.condition.astype(str)
        ]
        again = PerturbData(flipped)
    assert int(data.obs.control.sum()) == 10 and all('ctrl' not in c for c in data.conditions)
    assert again.conditions == data.conditions and int(again.obs.control.sum()) == 10


# ---------------------------------------------------------------- item 10: clear messages for drug data and specs

def _drug(n_cell_types=1, seed=0) -> ad.AnnData:
    "A small simulated drug screen: 3 drugs x 4 doses, DMSO controls at dose 0, a SMILES column."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return simulate(kind='drug', n_drugs=3, n_genes=30, n_cell_types=n_cell_types, cells_per_group=5,
                        n_control=20, seed=seed)


def _drug_data(a, **kw):
    kw = {'cell_type_key': 'cell_type', 'dose_key': 'dose', 'smiles_key': 'SMILES', 'kind': 'drug', **kw}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', InputSpaceWarning)
        return PerturbData(a, **kw)


def _set_obs(a, col, mask, value) -> ad.AnnData:
    "A copy of `a` whose obs[col] holds `value` on the cells of `mask` (the column becomes object dtype)."
    a = a.copy()
    v = a.obs[col].astype(object).to_numpy().copy(); v[np.asarray(mask)] = value
    a.obs[col] = v
    return a


@pytest.mark.parametrize('missing', [np.nan, None, ''])
def test_control_cells_need_no_smiles(missing):
    a = _drug()
    ctrl = (a.obs.condition == 'control').to_numpy()
    b = _set_obs(a, 'SMILES', ctrl, missing)
    before = b.obs.copy()
    data = _drug_data(b)
    assert data.smiles == _drug_data(a).smiles and set(data.smiles) == set(data.conditions)
    assert int(data.obs.control.sum()) == int(ctrl.sum())
    pd.testing.assert_frame_equal(b.obs, before)  # the caller's obs is untouched


def test_perturbed_cells_without_smiles_named():
    a = _drug()
    b = _set_obs(a, 'SMILES', (a.obs.condition == 'drug01').to_numpy(), np.nan)
    with pytest.raises(ValueError, match=r"drug01.*no SMILES.*smiles_key=.*--smiles-key") as e:
        _drug_data(b)
    assert 'drug_features' not in str(e.value) and '\n' not in str(e.value)
    c = _set_obs(a, 'SMILES', np.flatnonzero((a.obs.condition == 'drug02').to_numpy())[:2], '')  # some of its cells
    with pytest.raises(ValueError, match=r"drug02.*no SMILES"):
        _drug_data(c)


def test_require_smiles_names_the_option():
    a = _drug()
    plain = _drug_data(a, smiles_key=None)
    with pytest.raises(ValueError, match=r"DDIB encodes drugs by their SMILES.*drug00.*smiles_key=.*--smiles-key") as e:
        plain.require_smiles('DDIB')
    assert 'drug_features' not in str(e.value)
    assert _drug_data(a).require_smiles('DDIB') == _drug_data(a).smiles
    genes = PerturbData(simulate(n_genes=30, n_single=3, n_combo=0, cells_per_group=5, n_control=10, seed=0),
                        space='log1p')
    assert genes.require_smiles() == {}  # only drugs need SMILES


def test_backed_anndata_refused_in_one_line(tmp_path):
    a = _drug(); a.X = sp.csr_matrix(a.X)
    a.write_h5ad(tmp_path / 'drug.h5ad')
    backed = ad.read_h5ad(tmp_path / 'drug.h5ad', backed='r')
    with pytest.raises(ValueError, match=r"backed.*read_h5ad\(path\) without backed=.*BackedPerturbData") as e:
        _drug_data(backed)
    assert '\n' not in str(e.value)
    backed.file.close()
    dense = _drug(); dense.write_h5ad(tmp_path / 'dense.h5ad')
    backed = ad.read_h5ad(tmp_path / 'dense.h5ad', backed='r')
    with pytest.raises(ValueError, match='backed'):
        _drug_data(backed)
    # a layer is read into memory even in backed mode: it is used as it is
    data = _drug_data(backed, layer='counts')
    np.testing.assert_allclose(data.dense(), _drug_data(_drug(), layer='counts').dense())
    backed.file.close()


@pytest.mark.parametrize('bad', ['abc', '10 nM', np.inf])
def test_non_numeric_dose_named(bad):
    a = _drug()
    rows = np.flatnonzero((a.obs.condition == 'drug01').to_numpy())[:3]
    b = _set_obs(a, 'dose', rows, bad)
    with pytest.raises(ValueError, match=rf"obs\['dose'\].*{bad!r}.*3 cells.*drug01.*dose_key=") as e:
        _drug_data(b)
    assert 'could not convert' not in str(e.value) and '\n' not in str(e.value)


def test_missing_dose_only_on_controls():
    a = _drug()
    ctrl = (a.obs.condition == 'control').to_numpy()
    data = _drug_data(_set_obs(a, 'dose', ctrl, np.nan))  # vehicle cells without a dose: dose 0, as before
    pd.testing.assert_frame_equal(data.groups(), _drug_data(a).groups())
    assert (data.obs.dose[data.obs.control] == 0).all()
    b = _set_obs(a, 'dose', np.flatnonzero((a.obs.condition == 'drug02').to_numpy())[:2], np.nan)
    with pytest.raises(ValueError, match=r"obs\['dose'\].*2 cells.*drug02.*no dose"):
        _drug_data(b)


def test_custom_group_with_comma_in_cell_type():
    a = _drug(n_cell_types=2)
    a.obs['cell_type'] = a.obs.cell_type.astype(str).replace({'type0': 'U87,MG'})
    data = _drug_data(a)
    want = [f'drug01|U87,MG|{d!r}' for d in (10.0, 100.0, 1000.0, 10000.0)]
    for spec in ['drug01,"U87,MG"', 'drug01, "U87,MG"', ('drug01', 'U87,MG')]:
        assert sorted(data.split('custom', test=[spec]).test_groups.index) == want, spec
    one = data.split('custom', test=['drug01,"U87,MG",100', ('drug02', 'type1', 10.0)])
    assert sorted(one.test_groups.index) == ['drug01|U87,MG|100.0', 'drug02|type1|10.0']
    with pytest.raises(ValueError, match=r"dose 'x' is not a number"):
        data.split('custom', test=['drug01,"U87,MG",x'])
    with pytest.raises(ValueError, match=r"quote"):
        data.split('custom', test=['drug01,U87,MG,100'])
    g = resolve_groups(['drug01,"U87,MG"'], data.split('ood_drug', test=['drug01']).train)
    assert g.cell_type.tolist() == ['U87,MG']


def test_target_case_mismatch_hinted():
    sim = simulate(n_genes=40, n_single=4, n_combo=0, cells_per_group=8, n_control=20, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        measured = PerturbData(sim, space='log1p').measured_targets  # matching case: no hint
    assert len(measured) >= 2
    low = sim.copy(); low.var_names = [g.lower() for g in sim.var_names]
    with pytest.warns(UserWarning, match=rf"{len(measured)} of 4 targets.*only when case is ignored.*"
                                         rf"target '{measured[0]}' ~ gene '{measured[0].lower()}'"):
        data = PerturbData(low, space='log1p')
    assert data.measured_targets == []  # the data are read as given; the hint says how to fix them


def test_drug_without_dose_key_warns():
    a = _drug()
    with pytest.warns(UserWarning,
                      match=r"obs\['dose'\].*doses.*pooled.*dose_key='dose'.*--dose-key dose.*dose_key=False"):
        pooled = _drug_data(a, dose_key=None)
    assert pooled.groups().dose.isna().all()
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        on_purpose = _drug_data(a, dose_key=False)  # pooling stated: no warning
        _drug_data(a)
        one_dose = a[a.obs.dose.isin([0.0, 100.0]).to_numpy()].copy()  # one dose per drug: nothing is merged
        _drug_data(one_dose, dose_key=None)
    pd.testing.assert_frame_equal(on_purpose.groups(), pooled.groups())
    assert on_purpose.keys['dose'] is None
    b = a.copy(); b.obs['Concentration_uM'] = b.obs.pop('dose')
    with pytest.warns(UserWarning, match=r"Concentration_uM"):
        _drug_data(b, dose_key=None)


def test_control_like_token_in_a_pair_is_a_target_with_a_hint_and_declarable():
    """Review finding: a combination holding a control-like token ('A+NegCtrl0') was refused with a hint that, if
    followed, made its cells controls. Now only whole labels count as control look-alikes; a token gets a warning, and
    declaring the token as a control (control=['ctrl', 'NegCtrl0']) drops it from the combination."""
    n = 30
    obs = pd.DataFrame({'condition': ['ctrl'] * n + ['A'] * n + ['A+NegCtrl0'] * n},
                       index=[f'c{i}' for i in range(3 * n)])
    X = np.log1p(np.random.default_rng(0).poisson(3.0, (3 * n, 20)).astype(np.float32))
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f'G{i}' for i in range(20)]))
    with pytest.warns(UserWarning, match="hold tokens \\['NegCtrl0'\\] that look like controls"):
        d = PerturbData(a, space='log1p')
    assert int(d.obs.control.sum()) == n and 'A+NegCtrl0' in d.conditions
    d2 = PerturbData(a, control=['ctrl', 'NegCtrl0'], space='log1p')
    assert int(d2.obs.control.sum()) == n and set(d2.conditions) == {'A'}


def test_low_depth_log1p_subset_read_as_log1p():
    """Review finding: low-depth log1p data (too few values per cell to test a unit) was refused; it reads as log1p
    again."""
    rng = np.random.default_rng(0)
    C = rng.poisson(0.02, (300, 3000)).astype(np.float64)
    C[C.sum(1) == 0, 0] = 1
    L = np.log1p(C / C.sum(1, keepdims=True) * 1e4)[:, :100].astype(np.float32)
    from perturbdiff.spaces import guess_space
    space, why = guess_space(L)
    assert space == 'log1p' and 'too few values per cell' in why
