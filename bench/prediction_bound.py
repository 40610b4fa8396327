"""What the hardware allows Unlasting's and Departures' prediction at the papers' size on this machine (issue 18).

    OMP_NUM_THREADS=2 python bench/prediction_bound.py                  # Unlasting, 5,000 genes, groups of 10
    OMP_NUM_THREADS=2 python bench/prediction_bound.py --pred-cells 100
    OMP_NUM_THREADS=2 python bench/prediction_bound.py --model departures

Three measurements, then two bounds:
- the machine's GEMM rate, float32 and bf16, for the model's main products: Unlasting's trunk, a [b, G] x [G, G]
  product (G = --genes) for b = 20, 100, 200 and 1,000; Departures' GATv2 projections, a [b x nodes, 64] x [64, 128]
  product for b = 1, 3, 10 and 32 cells (median of 10 products after 3 warm-up ones);
- the matrix-product FLOP of one `predict` of the `paper` preset (fitted for one step on the simulator), counted by
  `torch.utils.flop_counter.FlopCounterMode`, per predicted cell, with the modules that take the most; and the
  cell-layers of GATv2 attention per predicted cell (forward pre-hooks on the model's `BatchedGATv2` layers). The
  compiled attention kernel is a custom autograd Function, so its work is not in the FLOP count;
- the compiled attention kernel alone (`perturbdiff.gat.gatv2_fused`) on the model's gene graph, at the GRN block's CPU
  sub-batch, on random features: ms per cell-layer (median of 10 calls after 3 warm-up ones).
Bound 1 (products only): the best GEMM rate divided by the FLOP per predicted cell. Bound 2 (products and attention):
one predicted cell takes at least its FLOP at the best rate plus its cell-layers at the kernel's measured time. No code
that keeps the sampler (its evaluations per cell), the network and the attention kernel can predict faster here.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import perturbdiff  # noqa: F401  (before torch: huge pages, as the package sets them)
import torch
from torch.utils.flop_counter import FlopCounterMode

from denoiser_profile import paper_unlasting, simulated_split  # bench/ is on the path when this script runs


def median_time(f, warm: int = 3, reps: int = 10) -> float:
    "Median seconds of f() over `reps` calls after `warm` warm-up calls."
    for _ in range(warm): f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype) -> float:
    "GFLOP/s of x [m, k] @ W [k, n]."
    g = torch.Generator().manual_seed(0)
    W, x = torch.randn(k, n, generator=g).to(dtype), torch.randn(m, k, generator=g).to(dtype)
    return 2 * m * k * n / median_time(lambda: x @ W) / 1e9


def paper_departures(genes: int, conditions: int):
    """Departures' `paper` preset fitted for one step on the data of `paper_unlasting`. Returns (model, split)."""
    from perturbdiff.models import Departures
    split, prior = simulated_split(genes, conditions)
    model = Departures.from_preset('paper', seed=0, device='cpu', epochs=1, graph=prior, progress=False)
    return model.fit(split.train, stop_after=1), split


def kernel_ms_per_cell(block) -> tuple[float, int]:
    "The compiled attention kernel on `block`'s graph at its CPU sub-batch: (ms per cell-layer, cells per call)."
    from perturbdiff.gat import gatv2_fused
    gat, plan = block.gat[0], block.plan()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        b = block.eval().sub_batch(torch.empty(0, block.n_measured)) or 1  # cells per sub-batch at CPU inference
        xl, xr = (torch.randn(block.graph.n_nodes, b, gat.heads, gat.out_dim, generator=g) for _ in range(2))
        s = median_time(lambda: gatv2_fused(xl, xr, gat.att, plan))
    return 1e3 * s / b, b


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='unlasting', choices=['unlasting', 'departures'])
    p.add_argument('--genes', type=int, default=5000)
    p.add_argument('--conditions', type=int, default=2)
    p.add_argument('--pred-cells', type=int, default=10, help='cells per group')
    p.add_argument('--n-control', type=int, default=20, help='Unlasting: control cells inverted')
    a = p.parse_args()
    warnings.filterwarnings('ignore')
    from perturbdiff.gat import BatchedGATv2, GRNBlock
    if a.model == 'unlasting': model, split = paper_unlasting(a.genes, a.conditions, a.n_control)
    else: model, split = paper_departures(a.genes, a.conditions)
    blocks = [m for m in model.net_.modules() if isinstance(m, GRNBlock)]
    if a.model == 'unlasting':
        G = a.genes
        label, shapes = f'[b, {G}] x [{G}, {G}]', {b: (b, G, G) for b in (20, 100, 200, 1000)}
    else:
        n, lin = blocks[0].graph.n_nodes, blocks[0].gat[0].lin_l  # the projections: [cells x nodes, dim] x [dim, H C]
        k, o = lin.in_features, lin.out_features
        label, shapes = f'[b x {n}, {k}] x [{k}, {o}]', {b: (b * n, k, o) for b in (1, 3, 10, 32)}
    rates = {}
    print(f'{torch.get_num_threads()} threads; GEMM {label}, GFLOP/s')
    for dt in (torch.float32, torch.bfloat16):
        rates[dt] = {b: gemm_rate(*s, dt) for b, s in shapes.items()}
        print(f'  {str(dt)[6:]}: ' + ', '.join(f'b={b}: {r:.0f}' for b, r in rates[dt].items()))
    def count(acc: list):  # a forward pre-hook adding the cells of each call to a new entry of acc
        acc.append(0); i = len(acc) - 1
        def hook(module, args): acc[i] += len(args[0])
        return hook
    cells, layers = [], []  # cells through each GRN block's forward, through each GATv2 layer's
    for m in model.net_.modules():
        if isinstance(m, GRNBlock): m.register_forward_pre_hook(count(cells))
        elif isinstance(m, BatchedGATv2): m.register_forward_pre_hook(count(layers))
    with FlopCounterMode(display=False) as fc:
        pred = model.predict(split.test, n_cells=a.pred_cells, seed=0)
    total = fc.get_total_flops()
    per_cell, cell_layers = total / pred.n_obs, sum(layers) / pred.n_obs
    what = f', {a.n_control} inverted controls' if a.model == 'unlasting' else ''
    print(f'\n{a.model}: {pred.n_obs} cells in groups of {a.pred_cells}{what}, per predicted cell: '
          f'{" + ".join(f"{c / pred.n_obs:.0f}" for c in cells)} evaluations of its {len(cells)} GRN block(s), '
          f'{cell_layers:.0f} GATv2 cell-layers')
    print(f'matrix products: {per_cell / 1e9:.2f} GFLOP per predicted cell')
    counts = fc.get_flop_counts()
    for name, v in sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))[1:9]:
        print(f'  {name}: {sum(v.values()) / pred.n_obs / 1e9:.2f} GFLOP per predicted cell')
    ms, b = kernel_ms_per_cell(blocks[0])
    print(f'attention kernel: {ms:.2f} ms per cell-layer ({b} cells per call), {ms * cell_layers / 1e3:.3f} s per '
          'predicted cell')
    for dt in (torch.float32, torch.bfloat16):
        best = max(rates[dt].values())
        gemm_s = per_cell / (best * 1e9)
        print(f'bound, {str(dt)[6:]} products at the best rate ({best:.0f} GFLOP/s): {1 / gemm_s:.1f} cells/s; with '
              f'the attention kernel: {1 / (gemm_s + ms * cell_layers / 1e3):.1f} cells/s')


if __name__ == '__main__':
    main()
