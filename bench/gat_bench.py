"""BatchedGATv2 (one graph shared by the batch) vs torch_geometric's GATv2Conv on the replicated graph.

    python bench/gat_bench.py                 # batch 32, 5,000 nodes, 100,000 edges (+ self-loops), D=64, H=2
    python bench/gat_bench.py --batch 8 --nodes 1000 --edges 20000   # a quick run

Both layers get the same weights (GATv2Conv is built from a seed; BatchedGATv2.from_pyg copies it), the same
graph (random, seeded; self-loops replaced by one per node, as GATv2Conv does), the same inputs and the same
loss sum(y * w). GATv2Conv sees the batch as the block-diagonal graph of `batch` copies (what
Batch.from_data_list builds: batch x nodes nodes, batch x edges edges), BatchedGATv2 sees x [batch, nodes, dim]
and one edge_index.

Method. Each implementation runs in its own subprocess, so that memory is measured separately:
- time: one warm-up forward+backward, then the median of --repeats timed forward+backward passes;
- peak memory: the process's peak resident set size (getrusage ru_maxrss) after the runs minus its resident
  size just before the first pass (inputs, weights and graph already built). On CPU torch allocates through
  the system allocator, so RSS sees every tensor (tracemalloc does not);
- equality: the workers save the output and the gradients (input and every parameter); the parent compares
  them: outputs by max |difference| (must be <= 1e-5), gradients by max |difference| / max |gradient|.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    "Current resident set size in MB (Linux /proc)."
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
    return float('nan')


def _setup(a):
    import torch
    from torch_geometric.nn import GATv2Conv
    from perturbdiff.gat import BatchedGATv2
    torch.manual_seed(a.seed)
    ei = torch.randint(0, a.nodes, (2, a.edges))
    conv = GATv2Conv(a.dim, a.dim, heads=a.heads, concat=False, add_self_loops=True)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(a.batch, a.nodes, a.dim)
    w = torch.randn(a.batch, a.nodes, a.dim)
    return torch, conv, BatchedGATv2, ei, x, w


def worker(a) -> None:
    "Run one implementation; print a JSON line with times and memory; save outputs and gradients."
    torch, conv, BatchedGATv2, ei, x, w = _setup(a)
    x.requires_grad_(True)
    if a.worker == 'pyg':
        layer = conv
        off = (torch.arange(a.batch) * a.nodes).repeat_interleave(a.edges)
        big = ei.repeat(1, a.batch) + off  # the replicated, block-diagonal graph
        run = lambda: conv(x.view(-1, a.dim), big).view(a.batch, a.nodes, -1)
    else:
        layer = BatchedGATv2.from_pyg(conv)
        layer.chunk_elements = a.chunk_elements
        plan = layer.plan(ei, a.nodes)  # sorted once: the graph is fixed
        run = lambda: layer(x, plan)
    base = _rss_mb()
    fwd, total = [], []
    for i in range(a.repeats + 1):
        x.grad = None; layer.zero_grad(set_to_none=True)
        t0 = time.perf_counter(); y = run(); t1 = time.perf_counter()
        (y * w).sum().backward(); t2 = time.perf_counter()
        if i: fwd.append(t1 - t0); total.append(t2 - t0)  # i = 0 is the warm-up
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({'y': y.detach(), 'x': x.grad, **{n: p.grad for n, p in layer.named_parameters()}}, a.out)
    print(json.dumps(dict(impl=a.worker, fwd=statistics.median(fwd), total=statistics.median(total),
                          peak_mb=peak - base, base_mb=base, threads=torch.get_num_threads())))


def main(a) -> None:
    import torch
    pressure = ''
    if os.path.exists('/proc/pressure/cpu'):
        with open('/proc/pressure/cpu') as f: pressure = f.readline().strip()
    print(f"GATv2 forward+backward, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}: batch "
          f"{a.batch}, {a.nodes} nodes, {a.edges} edges + self-loops, D={a.dim}, heads={a.heads} (averaged), "
          f"{a.repeats} timed runs each")
    if pressure: print(f"CPU pressure before the run (other processes competing for the cores): {pressure}")
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ('pyg', 'ours'):
            out = Path(tmp) / f'{impl}.pt'
            cmd = [sys.executable, __file__, '--worker', impl, '--out', str(out)] + [
                f'--{k}={getattr(a, k)}' for k in ('batch', 'nodes', 'edges', 'dim', 'heads', 'repeats', 'seed')]
            if a.chunk_elements: cmd.append(f'--chunk-elements={a.chunk_elements}')
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode: sys.exit(f"{impl} worker failed:\n{p.stderr[-3000:]}")
            res[impl] = json.loads(p.stdout.strip().splitlines()[-1])
            res[impl]['tensors'] = torch.load(out)
    P, O = res['pyg'], res['ours']
    out_diff = (P['tensors']['y'] - O['tensors']['y']).abs().max().item()
    grad_rel = {k: ((P['tensors'][k] - O['tensors'][k]).abs().max() / P['tensors'][k].abs().max()).item()
                for k in P['tensors'] if k != 'y' and P['tensors'][k] is not None and P['tensors'][k].abs().max() > 0}
    print(f"{'':34s}{'fwd (s)':>10s}{'fwd+bwd (s)':>13s}{'peak MB':>10s}")
    print(f"{'GATv2Conv, replicated graph':34s}{P['fwd']:10.3f}{P['total']:13.3f}{P['peak_mb']:10.0f}")
    print(f"{'BatchedGATv2, shared graph':34s}{O['fwd']:10.3f}{O['total']:13.3f}{O['peak_mb']:10.0f}")
    print(f"time ratio (GATv2Conv / BatchedGATv2), fwd+bwd: {P['total'] / O['total']:.1f}x   "
          f"forward only: {P['fwd'] / O['fwd']:.1f}x")
    print(f"peak memory ratio (GATv2Conv / BatchedGATv2): {P['peak_mb'] / max(O['peak_mb'], 1e-9):.1f}x")
    print(
        f"outputs: max |difference| = {out_diff:.2e} ({'equal to 1e-5' if out_diff <= 1e-5 else 'NOT EQUAL to 1e-5'})"
    )
    print("gradients: max |difference| / max |gradient| = " + ', '.join(f"{k} {v:.1e}" for k, v in grad_rel.items()))
    if os.path.exists('/proc/pressure/cpu'):
        with open('/proc/pressure/cpu') as f:
            print(f"CPU pressure after the run: {f.readline().strip()}  (avg60/avg300 well above "
                  f"0: other jobs shared the cores and the times are unreliable)")
    ok = out_diff <= 1e-5 and max(grad_rel.values()) <= 1e-4
    print(f"target >= 3x faster: {'met' if P['total'] / O['total'] >= 3 else 'NOT met'}")
    if not ok: sys.exit(1)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--nodes', type=int, default=5000)
    ap.add_argument('--edges', type=int, default=100_000)
    ap.add_argument('--dim', type=int, default=64)
    ap.add_argument('--heads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--chunk-elements', type=int, default=None, help="BatchedGATv2's chunk size (default: the layer's)")
    ap.add_argument('--worker', choices=('pyg', 'ours'), help=argparse.SUPPRESS)
    ap.add_argument('--out', help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker(args) if args.worker else main(args)
