"""Decoding variants (issue 13, ours): partial bridges (`bridge_depth`: where inversion turns round) and residual
decoding (`decode_residual`: control cell + D(z, target) - D(z, source)). Both are prediction-time options, so each
model is fitted once and predicted with every variant (Departures: with and without `decode_residual`, the same
bridge run twice with the same noise), on the McFaline CRISPRi part of the development file.

  validation  A172 and T98G only (U87MG dropped entirely); T98G's nine knockdowns held out   -> choose the depth here
  test        all three lines; U87MG's nine knockdowns held out (issue 13's unseen-context task) -> report only
  norman      (--tasks norman) Norman's 15 pairs, the singles trained -> report only

E-distance on each group's top-20 DE genes and on all genes; mean over the nine groups; control and mean baselines
beside. The variant is chosen on validation only (smallest mean E-distance DE20), never on the test groups.

    python bench/decoding.py --out results/decoding [--models doloris,unlasting] [--variants none,10,none:res,10:res] \
        [--set doloris.target_identity=true ...]
"""
import argparse
import time
from pathlib import Path

import pandas as pd

from perturbdiff.api import load_data, make_model, make_split, parse_overrides
from perturbdiff.metrics import de_rankings, evaluate_models

GENES = ['MAP2K3', 'MAP2K6', 'MAP3K21', 'MAP4K3', 'MAP4K5', 'MAPK1', 'PLK4', 'SGK1', 'TGFBR2']


def run(task, held, lines, models, depths, data_path, seed, preset, sigmas=(0.2,), control_pairs=(0.0,), over=None):
    over = over or {}
    if held == 'pairs':  # Norman: train on the singles, test on all 15 pairs
        data = load_data(data_path, subset=['dataset=norman19'], cell_type_key='cell_type', mode='CRISPRa')
        split = make_split(data, 'unseen_combo', test_frac=1.0, seed=seed)
    else:
        subset = ['dataset=mcfaline23'] + [f'cell_type={c}' for c in lines]
        data = load_data(data_path, subset=subset, cell_type_key='cell_type', mode='CRISPRi')
        split = make_split(data, 'custom', test=[f'{g},{held}' for g in GENES], seed=seed)
    tg, de = split.test.groups(), de_rankings(split.test, split.train)
    rows = []
    preds = {b: make_model(b, seed=seed, progress=False).fit(split.train).predict(tg, seed=seed)
             for b in ('control', 'mean', 'anchor') + (('additive',) if held == 'pairs' else ())}
    r = evaluate_models(preds, split.test, split.train, de_genes=de, metrics=('edist',))
    for b, t in r.groupby('model', sort=False):
        rows.append(dict(task=task, model=b, depth='-', edist_de20=t.edist_de20.mean(), edist_all=t.edist_all.mean()))
    for name in models:
        if name == 'departures':  # no inversion: the variants are control -> control bridges in training (a refit each)
            for cp in control_pairs:  # and the bridge's noise at prediction
                t0 = time.time()
                model = make_model(name, preset=preset, seed=seed, device='cpu', progress=False,
                                   overrides={name: {**over.get(name, {}), 'control_pairs': cp}}).fit(split.train)
                fit_s = time.time() - t0
                for sig in sigmas:
                    for res in (False, True):  # decode_residual: a prediction-time option, the same fit
                        model.config.decode_residual = res
                        r = evaluate_models({name: model.predict(tg, seed=seed, sigma=sig)}, split.test, split.train,
                                            de_genes=de, metrics=('edist',))
                        rows.append(dict(task=task, model=name, depth=f'control_pairs={cp}, sigma={sig}', residual=res,
                                         edist_de20=r.edist_de20.mean(), edist_all=r.edist_all.mean(),
                                         fit_seconds=round(fit_s, 1)))
                print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
            continue
        t0 = time.time()
        model = make_model(name, preset=preset, seed=seed, device='cpu', progress=False,
                           overrides={name: over.get(name, {})}).fit(split.train)
        fit_s = time.time() - t0
        for d, res in depths:
            model.config.bridge_depth, model.config.decode_residual = d, res is not False
            if res == 'zero':  # diagnostic: the network's change set to 0, i.e. the model's control cells + the anchor
                               # shift
                model._decode = lambda l, xc, ct, ci, dose, mode, sched, m=model: m._reconstruct(l, ct, sched)
            else: model.__dict__.pop('_decode', None)
            r = evaluate_models({name: model.predict(tg, seed=seed)}, split.test, split.train, de_genes=de,
                                metrics=('edist',))
            rows.append(dict(task=task, model=name, depth='none' if d is None else d, residual=res,
                             edist_de20=r.edist_de20.mean(), edist_all=r.edist_all.mean(), fit_seconds=round(fit_s, 1)))
            print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default='../shared/data/perturbench_devel.h5ad')
    ap.add_argument('--models', default='doloris,unlasting')
    ap.add_argument('--variants', default='none,10,none:res,10:res',
                    help='bridge_depth[:res|:zero] (res: decode_residual; zero: its change set to 0, a diagnostic)')
    ap.add_argument('--preset', default='quick')
    ap.add_argument('--sigmas', default='0.2', help='departures: the bridge noise at prediction, e.g. 0.2,0.1,0')
    ap.add_argument('--control-pairs', default='0',
                    help='departures: control -> control pairs in training, e.g. 0,0.25,0.5')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--tasks', default='validation,test', help='any of validation, test, norman')
    ap.add_argument('--set', action='append', default=[],
                    help='MODEL.KEY=VALUE (as perturbdiff --set), e.g. doloris.target_identity=true')
    ap.add_argument('--out', default=None)
    a = ap.parse_args(argv)
    over = parse_overrides(a.set)  # {model: {key: value}}, values as `perturbdiff --set` reads them
    sigmas = [float(x) for x in a.sigmas.split(',')]
    cps = [float(x) for x in a.control_pairs.split(',')]
    kinds = {'res': True, 'zero': 'zero'}
    depths = [(None if v.split(':')[0] == 'none' else int(v.split(':')[0]),
               kinds.get(v.split(':')[1], False) if ':' in v else False)
              for v in a.variants.split(',')]
    models, rows = a.models.split(','), []
    if 'validation' in a.tasks:
        rows += run('validation (T98G held out)', 'T98G', ['A172', 'T98G'], models, depths, a.data, a.seed, a.preset,
                    sigmas, cps, over)
    if 'norman' in a.tasks:
        rows += run('Norman pairs (singles trained)', 'pairs', [], models, depths, a.data, a.seed, a.preset, sigmas,
                    cps, over)
    if 'test' in a.tasks:
        rows += run('test (U87MG held out)', 'U87MG', ['A172', 'T98G', 'U87MG'], models, depths, a.data, a.seed,
                    a.preset, sigmas, cps, over)
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    if a.out:
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True); table.to_csv(out / 'decoding.csv', index=False)


if __name__ == '__main__':
    main()
