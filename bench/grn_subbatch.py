"""The GRN block (Unlasting's and Departures' GAT branch) at inference on the CPU: the whole batch at once against
cache-sized sub-batches (`GRNBlock.cpu_batch_elements`).

    python bench/grn_subbatch.py                       # 5,006 and 500 nodes, batches of 16, 64 and 256 cells
    python bench/grn_subbatch.py --nodes 5006 --batches 64 --elements 0,1048576,2097152,4194304

For each graph size a GRNBlock (dim 64, 2 heads, one layer, time input, eval mode) is built over a random graph
(seeded; `--degree` in-edges per node on average plus a self-loop, about the co-expression graph of `model_cost.py`:
58k edges over 5,006 nodes), and each batch of cells is run through it without gradients, with each
`cpu_batch_elements` setting (0: the whole batch at once). Time: one warm-up, then the median of `--repeats` runs,
reported in ms per cell. All settings of one graph run in the same process, interleaved, so that they share the
machine's state; the outputs of every setting are compared with the first setting's (max |difference|).
"""
from __future__ import annotations

import argparse
import statistics
import time

import perturbdiff  # noqa: F401  (before torch: sets torch's CPU allocator to huge pages, as the package does)
import torch

from perturbdiff.gat import GRNBlock
from perturbdiff.priors import GeneGraph


def block(n: int, degree: float, seed: int = 0) -> GRNBlock:
    "A GRNBlock over a random graph of n nodes, all measured (no gradients needed: eval mode)."
    g = torch.Generator().manual_seed(seed)
    e = int(n * degree)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    keep = src != dst
    loops = torch.arange(n)
    ei = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([loops, loops])], 1)
    graph = GeneGraph([f'g{i}' for i in range(n)], n, ei, torch.ones(ei.shape[1]), torch.zeros(ei.shape[1],
                                                                                                   dtype=torch.long))
    torch.manual_seed(seed)
    return GRNBlock(graph, 64, 2, 'gene', time_dim=128).eval()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--nodes', default='5006,500')
    p.add_argument('--degree', type=float, default=11.6)
    p.add_argument('--batches', default='16,64,256')
    p.add_argument('--elements', default=f'0,{1 << 20},{1 << 21},{1 << 22}',
                   help='cpu_batch_elements settings (0: the whole batch)')
    p.add_argument('--repeats', type=int, default=3)
    a = p.parse_args()
    settings = [int(s) for s in a.elements.split(',')]
    print(f'torch threads {torch.get_num_threads()}; ms per cell (cells per sub-batch); max |diff| to the first '
          'setting')
    for n in map(int, a.nodes.split(',')):
        grn = block(n, a.degree)
        print(f'\n{n} nodes, {grn.graph.n_edges} edges')
        print('| cells | ' + ' | '.join(f'{s or "whole"}' for s in settings) + ' |')
        print('|---|' + '---|' * len(settings))
        for B in map(int, a.batches.split(',')):
            x, t = torch.randn(B, n), torch.randn(B, 128)
            times, outs, cells = {s: [] for s in settings}, {}, {}
            with torch.no_grad():
                for r in range(a.repeats + 1):  # the first round warms up
                    for s in settings:
                        grn.cpu_batch_elements = s or None
                        cells[s] = min(grn.sub_batch(x, t), B)
                        t0 = time.perf_counter(); outs[s] = grn(x, t); dt = time.perf_counter() - t0
                        if r: times[s].append(dt)
            ref = outs[settings[0]]
            row = [f'{1000 * statistics.median(times[s]) / B:.2f} ({cells[s]}; {(outs[s] - ref).abs().max():.0e})'
                   for s in settings]
            print(f'| {B} | ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
    main()
