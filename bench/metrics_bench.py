"""Benchmark perturbdiff.metrics against the straightforward scipy references, side by side in one run.

    python bench/metrics_bench.py            # all cases (about a minute on 2 cores)
    python bench/metrics_bench.py --quick    # skip the 2,000-cell E-distance case

References: EMD = a per-gene `scipy.stats.wasserstein_distance` loop, averaged; E-distance (Doloris eq. 20)
= 2 mean(cdist(X, Y)) - 2 sum(pdist(X)) / n^2 - 2 sum(pdist(Y)) / m^2. Data: synthetic log1p-normalised
single-cell counts (float32, mostly zeros, like real data). Times are the best of several repeats; ratios
are reference time / our time. Ours runs both in the library's normal mode (EMD: gene chunks on
`default_threads()` threads; E-distance: the BLAS threads numpy has) and on one thread (the same footing as
the single-threaded scipy references).
"""
import argparse
import time

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.stats import wasserstein_distance
import torch
from threadpoolctl import threadpool_limits

from perturbdiff.metrics import default_threads, emd_per_gene, energy_distance


def cells(n, genes, rng, shift=0.0):
    "log1p(counts / library * 1e4) of gamma-Poisson counts, float32."
    mu = np.exp(rng.normal(-1.5, 1.5, genes) + shift * rng.normal(0, 0.3, genes)).clip(None, 50)
    counts = rng.poisson(rng.gamma(2.0, mu / 2.0, (n, genes)))
    lib = np.maximum(counts.sum(1, keepdims=True), 1)
    return np.log1p(counts / lib * 1e4).astype(np.float32)


def best(f, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); times.append(time.perf_counter() - t)
    return min(times), out


def emd_ref(X, Y):
    return np.array([wasserstein_distance(X[:, g], Y[:, g]) for g in range(X.shape[1])])


def edist_ref(X, Y):
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    n, m = len(X), len(Y)
    return 2 * cdist(X, Y).mean() - 2 * pdist(X).sum() / n ** 2 - 2 * pdist(Y).sum() / m ** 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true', help='skip the 2,000-cell E-distance case')
    ap.add_argument('--genes', type=int, default=5000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    G = args.genes
    rows = []
    X, Y = cells(300, G, rng), cells(300, G, rng, shift=1.0)
    print(f"data: 300 + 300 cells x {G} genes, float32, {np.mean(X == 0):.0%} zeros")
    for n, m in ((300, 300), (300, 250)):
        t_ref, ref = best(lambda: emd_ref(X[:n], Y[:m]), 2)
        for threads in (None, 1):
            t_our, our = best(lambda: emd_per_gene(X[:n], Y[:m], threads=threads), 7)
            nz = ref > 0
            rel = np.max(np.abs(our[nz] - ref[nz]) / ref[nz]); rel_mean = abs(our.mean() - ref.mean()) / ref.mean()
            label = f'{default_threads()} threads' if threads is None else '1 thread'
            rows.append((f'EMD {n}x{m}x{G}, {label}', t_our, t_ref, rel_mean, rel))
        for dev in ['cpu'] + (['cuda'] if torch.cuda.is_available() else []):  # the torch path (issue 18)
            emd_per_gene(X[:n], Y[:m], device=dev)  # warm-up (CUDA context, kernels)
            t_our, our = best(lambda: emd_per_gene(X[:n], Y[:m], device=dev), 7)
            nz = ref > 0
            rel = np.max(np.abs(our[nz] - ref[nz]) / ref[nz]); rel_mean = abs(our.mean() - ref.mean()) / ref.mean()
            rows.append((f'EMD {n}x{m}x{G}, torch on {dev}', t_our, t_ref, rel_mean, rel))
    cases = [(300, 300)] + ([] if args.quick else [(2000, 2000)])
    for n, m in cases:
        A, B = (X, Y) if n == 300 else (cells(n, G, rng), cells(m, G, rng, shift=1.0))
        t_ref, ref = best(lambda: edist_ref(A, B), 1 if n > 300 else 3)
        t_our, our = best(lambda: energy_distance(A, B), 2 if n > 300 else 5)
        with threadpool_limits(1):
            t_one, _ = best(lambda: energy_distance(A, B), 2 if n > 300 else 5)
        rel = abs(our - ref) / abs(ref)
        rows.append((f'E-distance {n}x{m}x{G}', t_our, t_ref, rel, rel))
        rows.append((f'E-distance {n}x{m}x{G}, 1 BLAS thread', t_one, t_ref, rel, rel))
        for dev in ['cpu'] + (['cuda'] if torch.cuda.is_available() else []):  # the torch path (issue 18)
            energy_distance(A, B, device=dev)  # warm-up (CUDA context, kernels)
            t_dev, ours = best(lambda: energy_distance(A, B, device=dev), 2 if n > 300 else 5)
            rel = abs(ours - ref) / abs(ref)
            rows.append((f'E-distance {n}x{m}x{G}, torch on {dev}', t_dev, t_ref, rel, rel))
    print(f"\n{'case':<42}{'ours (s)':>10}{'scipy ref (s)':>15}{'ratio':>9}"
          f"{'rel diff (mean)':>17}{'max rel diff/gene':>19}")
    for name, t_our, t_ref, rel_mean, rel in rows:
        per_gene = f'{rel:.1e}' if name.startswith('EMD') else '-'
        print(f"{name:<42}{t_our:>10.4f}{t_ref:>15.4f}{t_ref / t_our:>8.1f}x{rel_mean:>17.1e}{per_gene:>19}")
    emd_ok = all(
        t_ref / t_our >= 50 and rel <= 1e-9 for name, t_our, t_ref, _, rel in rows
        if name.startswith('EMD 300x300') and 'threads' in name  # the library's default: default_threads()
    )
    all_close = all(max(a, b) <= 1e-9 for *_, a, b in rows)
    print(f"\nEMD 300x300x{G} on {default_threads()} threads (the default) >= 50x faster (issue 18) and within 1e-9 "
          f"relative: {'PASS' if emd_ok else 'FAIL'}; "
          f"all values within 1e-9 relative: {'PASS' if all_close else 'FAIL'}")


if __name__ == '__main__':
    main()
