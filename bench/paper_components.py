"""The papers' components against the authors' code's (issue 16), each measured side by side on the built-in simulator
(a CRISPRi screen with a known gene graph; 25% of the single knockdowns held out, seed 0), never on a real test set.

Prediction-time pairs reuse one fit; training-time pairs are fitted twice with everything else equal:

  doloris    mask_search        group (authors' code) | cell (Doloris A.11)          prediction time
  unlasting  mask_aggregate     mean (authors' code)  | vote (Unlasting eq. 2)        prediction time (threshold masks)
  doloris    train_on_respaced  True (authors' code)  | False (the papers' T = 500)   a fit each
  doloris    lr, lr_schedule    1e-4 linear (code)    | 1e-3 constant (Doloris §4.2)  a fit each
  departures pairing            sinkhorn (code)       | batch (the paper)             a fit each

The `plain` presets (the papers' parts at CPU size) carry every other option. Output: one row per (model, option,
value): mean E-distance (eq. 20) and EMD on the top-20 DE genes and on all genes over the held-out groups, the
predicted cells' per-gene standard deviation relative to the true cells', and the seconds to fit and to predict.

    python bench/paper_components.py --out results/paper_components [--steps 600] [--seed 0]
"""
import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from perturbdiff.api import make_model
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.metrics import de_rankings, evaluate
from perturbdiff.priors import coexpression, edge_list

PAIRS = [  # model, option(s), the code's value(s), the paper's value(s), refit?
    ('doloris', 'mask_search', dict(mask_search='group'), dict(mask_search='cell'), False),
    ('unlasting', 'mask_aggregate', dict(mask_strategy='threshold', mask_aggregate='mean'),
     dict(mask_strategy='threshold', mask_aggregate='vote'), False),
    ('doloris', 'train_on_respaced', dict(train_on_respaced=True), dict(train_on_respaced=False), True),
    ('doloris', 'lr', dict(lr=1e-4, lr_schedule='linear'), dict(lr=1e-3, lr_schedule='constant'), True),
    ('departures', 'pairing', dict(pairing='sinkhorn'), dict(pairing='batch'), True),
]


def spread_ratio(pred, truth) -> float:
    "Mean over held-out groups of (per-gene std of the predicted cells) / (per-gene std of the true cells)."
    g_pred, g_true = pred.obs['perturbdiff_group'].to_numpy(), truth.obs.group.to_numpy()
    out = []
    for g in pd.unique(g_pred):
        p = np.asarray(pred.X[g_pred == g]); t = truth.dense(np.flatnonzero(g_true == g))
        out.append(p.std(0).mean() / max(t.std(0).mean(), 1e-12))
    return float(np.mean(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default='results/paper_components')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--steps', type=int, default=None, help='training steps of every fit (default: the presets)')
    a = ap.parse_args(argv)
    warnings.simplefilter('ignore')
    sim = simulate(seed=a.seed, n_genes=200, n_regulators=20, n_single=16, n_combo=0, n_cell_types=1)
    data = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type')
    split = data.split('unseen_perturbation', test_frac=0.25, seed=a.seed)
    graph = [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]
    de = de_rankings(split.test, split.train)
    rows, out = [], Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for model, option, code, paper, refit in PAIRS:
        fitted = None
        for label, opts in (('authors_code', code), ('paper', paper)):
            over = dict(graph=graph, **({'steps': a.steps} if a.steps else {}))
            t0 = time.time()
            if refit or fitted is None:
                fitted = make_model(model, 'plain', a.seed, 'cpu', {model: {**over, **opts}}, progress=False)
                fitted.fit(split.train)
                fit_s = time.time() - t0
            else:
                for k, v in opts.items(): setattr(fitted.config, k, v)  # a prediction-time option: the same fit
                fit_s = 0.0
            t0 = time.time()
            pred = fitted.predict(split.test, seed=a.seed)
            pred_s = time.time() - t0
            r = evaluate(pred, split.test, split.train, de_genes=de, metrics=('edist', 'emd'))
            rows.append(dict(model=model, option=option, reading=label, value=', '.join(f'{k}={v}' for k, v in
                                                                                          opts.items()),
                             edist_de20=r.edist_de20.mean(), edist_all=r.edist_all.mean(), emd_de20=r.emd_de20.mean(),
                             spread=spread_ratio(pred, split.test), fit_s=round(fit_s, 1), predict_s=round(pred_s, 2)))
            print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    pd.DataFrame(rows).to_csv(out / 'paper_components.csv', index=False)


if __name__ == '__main__':
    main()
