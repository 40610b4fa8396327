"""The learnability ladder on Norman (issue 13): each model fitted on the training singles, then scored on

  step 0  the model's own control cells (`generate_controls`) against held-out control cells: each model is fitted a
          second time with a random half of the control cells removed, generates as many controls as were held out,
          and is scored by E-distance on all genes against that half; the floor is the other half against it
          (--no-step0 skips the second fits); DDIB models are scored again with zeros drawn at the controls'
          expression rates (their denoisers are not the papers' zero model; see 07_ddib);
  step 1  the training singles themselves (a model that cannot reproduce what it was trained on has a bug);
  step 2  held-out pairs of two trained singles (seen2);
  step 3  all held-out pairs (seen0, seen1, seen2).

E-distance (the papers' convention) over each group's top-20 DE genes, ranked on its true cells against the training
controls; mean over groups. Step 4 of the issue (unseen singles on the simulator with a known graph) is the
`known_effect` test of tests/test_models.py, not repeated here.

    python bench/ladder.py --data ../shared/data/perturbench_devel.h5ad \
        --models unlasting,doloris,departures,anchor,additive,mean,control \
        --out results/ladder [--set doloris.steps=1200 ...]
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from perturbdiff.api import load_data, make_model, make_split, parse_overrides
from perturbdiff.ddib import DDIBModel
from perturbdiff.metrics import de_rankings, edist_options, energy_distance, evaluate_models, sampling_floor


def step0(name, train, preset, seed, device, overrides):
    """E-distance (all genes) of a model's generated controls to held-out controls, the same with zeros drawn at the
    controls' expression rates (DDIB models only: `generate_controls(zeros='control_rate')`), and the floor; mean over
    cell types."""
    ctrl = np.flatnonzero(train.obs.control.to_numpy())
    held = np.sort(np.random.default_rng([seed, 0]).permutation(ctrl)[: len(ctrl) // 2])
    model = make_model(name, preset=preset, seed=seed, device=device, progress=False, overrides={name: overrides})
    if not hasattr(model, 'generate_controls'): return np.nan, np.nan, np.nan
    model.fit(train.subset(np.setdiff1d(np.arange(train.n_cells), held)))
    opts, ours, rated, floor = edist_options('paper'), [], [], []
    ddib = isinstance(model, DDIBModel)
    for ct in train.cell_types:
        b = held[(train.obs.cell_type.iloc[held] == ct).to_numpy()]
        a = np.setdiff1d(ctrl[(train.obs.cell_type.iloc[ctrl] == ct).to_numpy()], b)
        if len(b) < 2: continue
        B = train.dense(b).astype(np.float64)
        ours.append(energy_distance(model.generate_controls(ct, len(b), seed=seed), B, **opts))
        if ddib:
            rated.append(energy_distance(model.generate_controls(ct, len(b), seed=seed, zeros='control_rate'), B,
                                         **opts))
        floor.append(energy_distance(train.dense(a).astype(np.float64), B, **opts))
    return float(np.mean(ours)), float(np.mean(rated)) if rated else np.nan, float(np.mean(floor))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', default='../shared/data/perturbench_devel.h5ad')
    ap.add_argument('--models', default='unlasting,doloris,departures,anchor,additive,linear,mean,control')
    ap.add_argument('--preset', default='quick')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--set', action='append', default=[],
                    help='MODEL.KEY=VALUE (as perturbdiff --set), e.g. doloris.steps=1200')
    ap.add_argument('--no-step0', action='store_true', help='skip step 0 (a second fit of each model)')
    ap.add_argument('--out', default=None)
    a = ap.parse_args(argv)
    over = parse_overrides(a.set)  # {model: {key: value}}, values as `perturbdiff --set` reads them
    data = load_data(a.data, subset=['dataset=norman19'], cell_type_key='cell_type', mode='CRISPRa')
    split = make_split(data, 'unseen_combo', test_frac=1.0, seed=a.seed)
    train, test = split.train, split.test
    singles = set(train.groups().condition)
    tg, sg = test.groups(), train.groups()
    seen = {g: sum(t in singles for t in c.split('+')) for g, c in zip(tg.index, tg.condition)}
    de_test, de_train = de_rankings(test, train), de_rankings(train, train, list(sg.index))
    fl_test = sampling_floor(test, list(tg.index), de_test, seed=a.seed)
    fl_train = sampling_floor(train, list(sg.index), de_train, seed=a.seed)
    rows, timing, floor0 = [], [], np.nan
    for name in a.models.split(','):
        if a.device.startswith('cuda'):
            import torch; torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        model = make_model(name, preset=a.preset, seed=a.seed, device=a.device, progress=False,
                           overrides={name: over.get(name, {})})
        model.fit(train)
        fit_s = time.time() - t0
        r_test = evaluate_models({name: model.predict(tg, seed=a.seed)}, test, train, de_genes=de_test,
                                 metrics=('edist', 'emd'))
        r_train = evaluate_models({name: model.predict(sg, seed=a.seed)}, train, train, de_genes=de_train,
                                  metrics=('edist', 'emd'))
        r_test['seen'] = r_test['group'].map(seen)
        s0, s0r, fl0 = (np.nan,) * 3 if a.no_step0 else step0(name, train, a.preset, a.seed, a.device,
                                                              over.get(name, {}))
        floor0 = fl0 if np.isfinite(fl0) else floor0
        rows.append(dict(model=name, step0_controls_all_genes=s0, step0_control_rate_zeros=s0r,
                         step1_train_singles=r_train.edist_de20.mean(),
                         step2_seen2=r_test.edist_de20[r_test.seen == 2].mean(),
                         step3_all_pairs=r_test.edist_de20.mean(), seen0=r_test.edist_de20[r_test.seen == 0].mean(),
                         seen1=r_test.edist_de20[r_test.seen == 1].mean(),
                         emd_de20_all_pairs=r_test.emd_de20.mean(), edist_de40_all_pairs=r_test.edist_de40.mean(),
                         emd_de40_all_pairs=r_test.emd_de40.mean()))
        steps = getattr(getattr(model, 'config', None), 'steps', None)
        peak = None
        if a.device.startswith('cuda'):
            import torch; peak = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        timing.append(dict(model=name, fit_seconds=round(fit_s, 1), total_seconds=round(time.time() - t0, 1),
                           steps=steps, steps_per_second=round(steps / fit_s, 1) if steps else None, peak_gpu_gib=peak))
        print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    floor_row = dict(model='floor (two halves of the truth)', step0_controls_all_genes=floor0,
                     step1_train_singles=fl_train.mean(),
                     step2_seen2=fl_test[[g for g in tg.index if seen[g] == 2]].mean(), step3_all_pairs=fl_test.mean(),
                     seen0=fl_test[[g for g in tg.index if seen[g] == 0]].mean(),
                     seen1=fl_test[[g for g in tg.index if seen[g] == 1]].mean())
    table = pd.DataFrame(rows + [floor_row])
    print(table.round(3).to_string(index=False))
    print(pd.DataFrame(timing).to_string(index=False))
    if a.out:
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / 'ladder.csv', index=False); pd.DataFrame(timing).to_csv(out / 'timing.csv', index=False)
        pd.concat([fl_test.rename('floor_edist_de20')]).to_csv(out / 'floor_per_pair.csv')


if __name__ == '__main__':
    main()
