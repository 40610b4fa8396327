"""What is left to win (issue 13): how much of a baseline's error is the mean shift, and can the training data predict
it?

Part 1, the oracle decomposition. For each task the control cells of the test group's cell type are shifted by the
*true* mean shift of the test group (its cells' mean minus the training controls' mean): information no model has.
Whatever that prediction still misses is the part of the error that lies in the shape of the distribution (spread,
sparsity, cell-to-cell structure), which is what a generative model can add over a mean predictor; the rest of a
baseline's error is its mean. Shown beside the floor (two random halves of each group's true cells), the control,
mean and additive / anchor baselines. It uses the test truth to measure a ceiling and chooses nothing.

Part 2, leave-one-out on the training singles of Norman: each trained single is hidden, and its effect on its own
top-20 genes (by |effect|) is predicted from the other singles by the mean of their effects (what the additive
baseline uses for an unseen target), by zero, and by GO-similarity predictors (GEARS' Jaccard of GO-term sets:
the similarity-weighted mean of the others, and kernel ridge regression with the Jaccard kernel). Mean squared
error, and the paired difference to the mean rule with its standard error. A predictor of unseen targets that
cannot beat the mean here has no evidence behind it on the test pairs either.

    python bench/ceiling.py --data ../shared/data/perturbench_devel.h5ad --out results/ceiling
"""
import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from perturbdiff.baselines import group_effects
from perturbdiff.api import load_data, make_model, make_split
from perturbdiff.contract import prediction_anndata, resolve_groups
from perturbdiff.metrics import de_rankings, evaluate_models, sampling_floor
from perturbdiff.priors import read_go

MCFALINE_GENES = ['MAP2K3', 'MAP2K6', 'MAP3K21', 'MAP4K3', 'MAP4K5', 'MAPK1', 'PLK4', 'SGK1', 'TGFBR2']


def tasks(path, seed):
    "(name, split, {group: subgroup label}) of the three tasks of issue 13."
    data = load_data(path, subset=['dataset=norman19'], cell_type_key='cell_type', mode='CRISPRa')
    split = make_split(data, 'unseen_combo', test_frac=1.0, seed=seed)
    singles = set(split.train.groups().condition)
    tg = split.test.groups()
    yield (
        'norman: 15 pairs',
        split,
        {g: f'seen{sum(t in singles for t in c.split("+"))}' for g, c in zip(tg.index, tg.condition)},
    )
    for held, lines in (('T98G', ['A172', 'T98G']), ('U87MG', ['A172', 'T98G', 'U87MG'])):
        data = load_data(path, subset=['dataset=mcfaline23'] + [f'cell_type={c}' for c in lines],
                         cell_type_key='cell_type', mode='CRISPRi')
        split = make_split(data, 'custom', test=[f'{g},{held}' for g in MCFALINE_GENES], seed=seed)
        yield f'mcfaline: {held} held out', split, {g: 'all' for g in split.test.groups().index}


def oracle_mean_shift(split, seed):
    "Control cells of each test group's cell type + the group's true mean shift (clipped at 0), as a prediction."
    tr, te = split.train, split.test
    tg = te.groups()
    group = te.obs.group.astype(str).to_numpy()
    # read once per cell type
    controls = {ct: tr.dense(tr.control_rows(ct)).astype(np.float64) for ct in pd.unique(tg.cell_type)}
    X, ids = [], []
    for gid, row in tg.iterrows():
        C = controls[row.cell_type]
        T = te.dense(np.flatnonzero(group == gid)).astype(np.float64)
        base = C[np.random.default_rng([seed, len(ids)]).choice(len(C), int(row.n_cells), replace=row.n_cells > len(C))]
        X.append(np.clip(base + T.mean(0) - C.mean(0), 0, None)); ids += [gid] * int(row.n_cells)
    return prediction_anndata(np.vstack(X), ids, resolve_groups(tg, tr), tr, 'oracle_mean_shift')


def decomposition(path, seed):
    rows = []
    for name, split, sub in tasks(path, seed):
        tg, de = split.test.groups(), de_rankings(split.test, split.train)
        preds = {'oracle mean shift': oracle_mean_shift(split, seed)}
        for b in ('control', 'mean', 'additive', 'anchor'):
            preds[b] = make_model(b, seed=seed, progress=False).fit(split.train).predict(tg, seed=seed)
        r = evaluate_models(preds, split.test, split.train, de_genes=de, metrics=('edist', 'emd'))
        r['sub'] = r.group.map(sub)
        fl = sampling_floor(split.test, list(tg.index), de, seed=seed).rename('edist_de20').to_frame()
        fl['model'], fl['sub'] = 'floor (two halves of the truth)', fl.index.map(sub)
        both = pd.concat([r, fl.reset_index(drop=True)], ignore_index=True)
        parts = sorted(set(sub.values()))
        for s in parts + (['all'] if len(parts) > 1 else []):
            t = both if s == 'all' else both[both['sub'] == s]
            m = t.groupby('model', sort=False)[['edist_de20', 'emd_de20', 'edist_de40', 'edist_all']].mean()
            m['n_groups'] = t.groupby('model', sort=False).size()
            rows.append(m.reset_index().assign(task=name, subgroup=s))
    cols = ['task', 'subgroup', 'model', 'n_groups', 'edist_de20', 'emd_de20', 'edist_de40', 'edist_all']
    return pd.concat(rows, ignore_index=True)[cols]


def loo_go(path, seed, n_top=20):
    "Leave-one-out errors of unseen-target predictors on Norman's training singles (rows: rule)."
    data = load_data(path, subset=['dataset=norman19'], cell_type_key='cell_type', mode='CRISPRa')
    tr = make_split(data, 'unseen_combo', test_frac=1.0, seed=seed).train
    table, eff, _ = group_effects(tr)
    targets = table.condition.tolist()
    terms = read_go(None, download=False)  # the cached annotations; never fetched here
    terms = terms.annotations.groupby('symbol').go_id.apply(set)
    def jaccard(a, b):
        A, B = terms.get(a, set()), terms.get(b, set())
        return len(A & B) / max(len(A | B), 1)
    K = np.array([[jaccard(a, b) for b in targets] for a in targets])
    out = []
    for i, k in enumerate(targets):
        rest = [j for j in range(len(targets)) if j != i]
        E, top = eff[rest], np.argsort(-np.abs(eff[i]), kind='stable')[:n_top]
        m, kv = E.mean(0), K[i, rest]
        preds = {'mean of the other singles (additive)': m, 'zero (control)': np.zeros_like(m),
                 'GO-similarity-weighted mean': kv @ E / kv.sum() if kv.sum() > 0 else m}
        for lam in (0.1, 1.0, 10.0):
            preds[f'GO-Jaccard kernel ridge, lambda={lam:g}'] = m + kv @ np.linalg.solve(
                K[np.ix_(rest, rest)] + lam * np.eye(len(rest)), E - m
            )
        out += [dict(target=k, rule=n, error=float(np.mean((p[top] - eff[i][top]) ** 2))) for n, p in preds.items()]
    err = pd.DataFrame(out).pivot(index='target', columns='rule', values='error')
    d = err.sub(err['mean of the other singles (additive)'], axis=0)
    s = pd.DataFrame(dict(mse=err.mean(), diff_to_mean=d.mean(), se=d.std(ddof=1) / np.sqrt(len(d))))
    s.attrs['jaccard_offdiag'] = float((K.sum() - np.trace(K)) / (len(K) * (len(K) - 1)))
    return s.sort_values('mse')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default='../shared/data/perturbench_devel.h5ad')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-go', action='store_true', help='skip part 2 (needs the GO annotations)')
    ap.add_argument('--out', default=None)
    a = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dec = decomposition(a.data, a.seed)
        loo = None if a.no_go else loo_go(a.data, a.seed)
    with pd.option_context('display.width', 200):
        print(dec.round(3).to_string(index=False))
        if loo is not None:
            print(loo.round(4).to_string(), '\nmean off-diagonal Jaccard:', round(loo.attrs['jaccard_offdiag'], 3))
    if a.out:
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
        dec.to_csv(out / 'decomposition.csv', index=False)
        if loo is not None: loo.to_csv(out / 'loo_go.csv')


if __name__ == '__main__':
    main()
