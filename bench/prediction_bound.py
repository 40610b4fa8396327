"""What the matrix products alone allow Unlasting's prediction at the papers' size on this machine (issue 18).

    OMP_NUM_THREADS=2 python bench/prediction_bound.py                  # 5,000 genes, groups of 10, 20 controls
    OMP_NUM_THREADS=2 python bench/prediction_bound.py --pred-cells 100

Two measurements, then the bound:
- the machine's GEMM rate for a [b, G] x [G, G] product (the trunk's layers; G = --genes), float32 and bf16, for
  b = 20, 100, 200 and 1,000 (median of 10 products after 3 warm-up ones);
- the matrix-product FLOP of one `predict` of the `paper` preset (fitted for one step on the simulator, as
  `bench/denoiser_profile.py` does), counted by `torch.utils.flop_counter.FlopCounterMode`, per cell and denoiser
  evaluation and per predicted cell, with the modules that take the most. The compiled GAT kernel is a custom autograd
  Function, so its work (about 2 x edges x heads x channels multiply-adds per cell) is not in the count.
The bound on predicted cells per second is the best measured rate divided by the FLOP per predicted cell: no code that
keeps the sampler (its evaluations per cell) and the network can predict faster on this machine.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import perturbdiff  # noqa: F401  (before torch: huge pages, as the package sets them)
import torch
from torch.utils.flop_counter import FlopCounterMode

from denoiser_profile import paper_unlasting  # bench/ is on the path when this script runs


def gemm_rate(b: int, G: int, dtype: torch.dtype) -> float:
    "GFLOP/s of x [b, G] @ W [G, G]."
    g = torch.Generator().manual_seed(0)
    W, x = torch.randn(G, G, generator=g).to(dtype), torch.randn(b, G, generator=g).to(dtype)
    for _ in range(3): x @ W
    ts = []
    for _ in range(10):
        t0 = time.perf_counter(); x @ W; ts.append(time.perf_counter() - t0)
    return 2 * b * G * G / statistics.median(ts) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--genes', type=int, default=5000)
    p.add_argument('--conditions', type=int, default=2)
    p.add_argument('--pred-cells', type=int, default=10, help='cells per group')
    p.add_argument('--n-control', type=int, default=20)
    a = p.parse_args()
    warnings.filterwarnings('ignore')
    rates = {}
    print(f'{torch.get_num_threads()} threads; GEMM [b, {a.genes}] x [{a.genes}, {a.genes}], GFLOP/s')
    for dt in (torch.float32, torch.bfloat16):
        rates[dt] = {b: gemm_rate(b, a.genes, dt) for b in (20, 100, 200, 1000)}
        print(f'  {str(dt)[6:]}: ' + ', '.join(f'b={b}: {r:.0f}' for b, r in rates[dt].items()))
    model, split = paper_unlasting(a.genes, a.conditions, a.n_control)
    cells = []
    model.net_.register_forward_pre_hook(lambda m, args: cells.append(len(args[0])))
    with FlopCounterMode(display=False) as fc:
        pred = model.predict(split.test, n_cells=a.pred_cells, seed=0)
    total, n_eval = fc.get_total_flops(), sum(cells)
    per_cell = total / pred.n_obs
    print(f'\n{pred.n_obs} cells in groups of {a.pred_cells}, {a.n_control} inverted controls: {len(cells)} '
          f'evaluations, {n_eval} cell-evaluations ({n_eval / pred.n_obs:.0f} per predicted cell)')
    print(f'matrix products: {total / n_eval / 1e6:.0f} MFLOP per cell and evaluation, {per_cell / 1e9:.1f} GFLOP per '
          'predicted cell')
    counts = fc.get_flop_counts()
    for name, v in sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))[1:9]:
        print(f'  {name}: {sum(v.values()) / n_eval / 1e6:.1f} MFLOP per cell and evaluation')
    for dt in (torch.float32, torch.bfloat16):
        best = max(rates[dt].values())
        print(f'bound, {str(dt)[6:]}: {best * 1e9 / per_cell:.1f} cells/s at the best rate ({best:.0f} GFLOP/s)')


if __name__ == '__main__':
    main()
