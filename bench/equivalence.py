"""Same seed, same predictions across a refactor (issue 15): each model fitted on the simulator with few steps and its
predictions saved; run at the commit before a change and after it, then compare.

    git worktree add /tmp/before HEAD
    (cd /tmp/before && PYTHONPATH=$PWD python /work/main/bench/equivalence.py --out /tmp/eq_before)
    python bench/equivalence.py --out /tmp/eq_after --compare /tmp/eq_before

Models: the baselines, Unlasting, Doloris and Departures (quick and plain presets). `--data norman` runs the same on
the Norman part of the development file (train on the singles, predict the 15 pairs; GO is left out so that the run
does not depend on what is cached). Prints, per model, whether the predictions are bit-identical and the largest
absolute difference; exits 1 if any differ by more than --atol (default 0: bit-identical). Cells are compared group by
group (a stable sort by `obs['perturbdiff_group']`), so a change in the order in which groups are returned is not a
difference of values; a changed order is reported.

`--float32-sigma` computes the DDIB preconditioning's σ_data as the code before 292a4fd did (one float32 pass over the
densified training matrix, `X[X > 0].std()`) instead of `expressed_std`'s streamed float64 one: with it, a comparison
against a reference written before that commit shows whether σ_data is the only change of arithmetic.
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

RUNS = [('control', 'quick', {}), ('mean', 'quick', {}), ('additive', 'quick', {}), ('linear', 'quick', {}),
        ('anchor', 'quick', {}),
        ('unlasting', 'quick', dict(steps=30)), ('doloris', 'quick', dict(steps=30)),
        ('unlasting', 'plain', dict(steps=30, mask_steps=10)), ('doloris', 'plain', dict(steps=30, mask_steps=10)),
        ('departures', 'quick', dict(steps=30)), ('departures', 'plain', dict(steps=30))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', required=True)
    ap.add_argument('--compare', default=None, help='a folder written by this script at another commit')
    ap.add_argument('--atol', type=float, default=0.0)
    ap.add_argument('--data', default='synthetic', help="'synthetic' (the simulator) or 'norman'")
    ap.add_argument('--path', default='../shared/data/perturbench_devel.h5ad',
                    help='the development file (--data norman)')
    ap.add_argument('--float32-sigma', action='store_true',
                    help="σ_data as before 292a4fd (see the module's docstring)")
    a = ap.parse_args(argv)
    if a.float32_sigma:
        import perturbdiff.ddib as ddib
        def float32_sigma(train, chunk=None):
            X = train.dense(scaled=True)
            return float(X[X > 0].std()) if (X > 0).any() else 1.0
        ddib.expressed_std = float32_sigma
    import torch
    torch.set_num_threads(1)
    try: from perturbdiff.api import load_data, make_model, make_split
    except ImportError: from perturbdiff.cli import load_data, make_model, make_split  # before e69be40
    from perturbdiff.priors import coexpression
    warnings.filterwarnings('ignore')
    if a.data == 'norman':
        data = load_data(a.path, subset=['dataset=norman19'], cell_type_key='cell_type', mode='CRISPRa')
        split = make_split(data, 'unseen_combo', test_frac=1.0, seed=0)
    else:
        data = load_data('synthetic')
        split = make_split(data, 'unseen_combo', test_frac=0.5, seed=0)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for name, preset, over in RUNS:
        key = f'{name}_{preset}'
        if a.data == 'norman' and name in ('anchor', 'unlasting', 'doloris', 'departures'):
            over = {**over, 'graph': [coexpression(0.3, max_cells=5000)]}
        model = make_model(name, preset=preset, seed=0, device='cpu', progress=False, overrides={name: over})
        pred = model.fit(split.train).predict(split.test, seed=0)
        X = np.asarray(pred.X, dtype=np.float32)
        ids = np.asarray(pred.obs['perturbdiff_group'].astype(str), dtype=str)
        np.save(out / f'{key}.npy', X); np.save(out / f'{key}.ids.npy', ids)
        if a.compare:
            ref = np.load(Path(a.compare) / f'{key}.npy')
            ref_ids_file = Path(a.compare) / f'{key}.ids.npy'
            ref_ids = np.load(ref_ids_file) if ref_ids_file.exists() else ids
            order = '' if np.array_equal(ref_ids, ids) else ' (groups in another order)'
            X, ref = X[np.argsort(ids, kind='stable')], ref[np.argsort(ref_ids, kind='stable')]
            same = ref.shape == X.shape and np.array_equal(ref, X)
            diff = float(np.abs(ref - X).max()) if ref.shape == X.shape else float('inf')
            ok = same or diff <= a.atol
            bad += not ok
            print(f'{key:22s} '
                  f'{"bit-identical" if same else f"max |diff| {diff:.3g}"}{order}{"" if ok else "  <- DIFFERS"}',
                  flush=True)
        else:
            print(f'{key:22s} saved {X.shape}', flush=True)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
