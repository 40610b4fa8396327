"""Out-of-core training benchmark: a 1,000,000-cell x 2,000-gene sparse h5ad, trained from disk.

    python bench/scale_bench.py [--workdir /tmp/perturbdiff_scale_bench] [--cells 1000000] [--steps 300]

1. Writes a synthetic log1p screen (about 92% zeros, cells in random order, 1,000 CRISPRi perturbations of
   measured genes + 10% controls, 2 cell types) chunk by chunk with `perturbdiff.scale.H5adWriter`: the
   dense matrix is never built (8 GB in float32 at this size). The file goes to --workdir, never the repo.
2. Under `torchrun --nproc_per_node 1` and then 2 (same global batch), each process opens the file with
   `BackedPerturbData`, splits it (one streaming pass for HVGs, scale and control statistics, shared by the
   ranks), and trains the real Unlasting denoiser network with the real DDIB loss (`ddib_loss`,
   `Conditioner`) through `perturbdiff.train.fit` for --steps steps, batches from `CellBatches` (lazy,
   block-shuffled reads). The one-process run also times reading alone, block vs random order.
3. Compares writing predictions with `H5adWriter` (append) against anndata's `concat_on_disk` of chunk files.

Prints a table: peak RSS of each process against the dense size of X, seconds per phase, steps/s and
cells/s for 1 and 2 processes. On a 2-core machine 2 processes (1 thread each) are not expected to be faster
than 1 process with 2 threads; the point is that the engine runs and memory stays bounded.

Why a representative network and not `Unlasting.fit`: the models' own batch factories (DDIBBatches,
BridgePairs, the mask model's) still build each epoch as a list of dense batches, about 7 GB per epoch here;
returning a `perturbdiff.train.BatchSequence` instead (a two-line change each) makes `fit` itself run
out of core.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_gb() -> float:
    "Peak resident set size of this process (ru_maxrss is in KiB on Linux)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def rss_gb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 30


# ---------------------------------------------------------------- 1. the synthetic file, written in chunks
def synthetic_chunks(n_cells: int, n_genes: int, density: float, seed: int = 0, chunk: int = 10_000,
                     n_pert: int = 1000):
    "Yield (CSR log1p float32, obs) chunks of a synthetic CRISPRi screen; nothing of size n_cells x n_genes."
    import pandas as pd
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    genes = [f'GENE{i:05d}' for i in range(n_genes)]
    p_on = np.clip(rng.lognormal(np.log(density), 0.8, n_genes), 0.002, 0.9)
    p_on *= density / p_on.mean()
    mu = rng.lognormal(0.5, 0.8, n_genes)  # expression level when on
    n_pert = min(n_pert, n_genes // 2)
    targets = rng.choice(n_genes, n_pert, replace=False)
    conds = np.array(['control'] + [genes[t] for t in targets], dtype=object)
    for s in range(0, n_cells, chunk):
        n = min(chunk, n_cells - s)
        c = np.where(rng.random(n) < 0.1, 0, rng.integers(1, n_pert + 1, n))  # 10% controls
        ct = rng.integers(0, 2, n)
        on = rng.random((n, n_genes), dtype=np.float32) < p_on.astype(np.float32)
        r, g = np.nonzero(on)
        lam = mu[g] * np.where(ct[r] == 1, 1.3, 1.0)
        hit = (c[r] > 0) & (g == targets[np.maximum(c[r] - 1, 0)])
        lam = np.where(hit, lam * 0.2, lam)  # knockdown of the target
        vals = np.log1p(1 + rng.poisson(lam)).astype(np.float32)
        X = sp.csr_matrix((vals, (r, g)), shape=(n, n_genes))
        obs = pd.DataFrame({'condition': pd.Categorical(conds[c], categories=list(conds)),
                            'cell_type': pd.Categorical(np.where(ct == 1, 'typeB', 'typeA')),
                            'perturbation_type': pd.Categorical(np.where(c == 0, 'control', 'CRISPRi'))},
                           index=[f'cell{s + i:07d}' for i in range(n)])
        yield X, obs
    return genes


def write_file(path: Path, n_cells: int, n_genes: int, density: float) -> dict:
    from perturbdiff.backed import H5adWriter
    t = time.time()
    genes = [f'GENE{i:05d}' for i in range(n_genes)]
    with H5adWriter(path, genes, sparse=True) as w:
        for X, obs in synthetic_chunks(n_cells, n_genes, density): w.append(X, obs)
        nnz = w.nnz
    return dict(seconds=time.time() - t, nnz=int(nnz), zeros=1 - nnz / (n_cells * n_genes),
                file_gb=path.stat().st_size / 2 ** 30, peak_rss_gb=peak_rss_gb())


# ---------------------------------------------------------------- 2. one training process (run under torchrun)
def worker(args) -> None:
    warnings.simplefilter('ignore')
    import torch
    from perturbdiff.ddib import Conditioner, UnlastingNet, ddib_config, ddib_loss
    from perturbdiff.diffusion import Schedule
    from perturbdiff.priors import GeneGraph
    from perturbdiff.backed import BackedPerturbData
    from perturbdiff.scale import CellBatches
    from perturbdiff.train import TrainConfig, distributed_context, fit
    ctx = distributed_context(torch.device(args.device))
    rep, t = dict(rank=ctx.rank, world_size=ctx.world_size, threads=torch.get_num_threads(),
                  device=args.device), time.time()
    data = BackedPerturbData(args.data, cell_type_key='cell_type', mode_key='perturbation_type')
    rep.update(open_s=time.time() - t, rss_after_open_gb=rss_gb()); t = time.time()
    split = data.split('unseen_perturbation', test_frac=0.1, seed=0, n_top_genes=args.n_top_genes)
    train = split.train
    rep.update(split_s=time.time() - t, passes=data.source.n_passes, train_cells=train.n_cells, genes=train.n_genes,
               rss_after_split_gb=rss_gb())
    if ctx.world_size == 1 and args.read_steps:  # reading alone: block vs random order
        for order in ('block', 'random'):
            seq = CellBatches(train, args.batch_size, seed=1, order=order)(0)
            t = time.time()
            for i in range(args.read_steps): seq[i]
            rep[f'read_{order}_cells_per_s'] = args.read_steps * args.batch_size / (time.time() - t)
    cfg = ddib_config('unlasting', 'quick', use_grn=False, hidden=256, decoder=(256, 256), time_dim=64)
    graph = GeneGraph.build(train, [], warn=False)
    cond = Conditioner(train, graph, cfg)
    torch.manual_seed(0)
    net = UnlastingNet(graph, cfg, len(cond.cell_types), train.kind, seed=0)
    sched = Schedule.make(cfg.schedule, cfg.T).respace(cfg.sampling_steps)

    def loss(model, b, gen):
        return ddib_loss(model, dict(x0=b['x'], cell_type=b['cell_type'], condition=b['condition'], dose=b['dose'],
                                     mode=b['mode'], is_target=~b['control']), gen, sched, cond)
    batches = CellBatches(train, args.batch_size, seed=0, order='block', drop_last=True)
    tc = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, log_every=max(1, args.steps // 10),
                     device=args.device, progress=False, prefetch=args.prefetch, grad_clip=1.0)
    t = time.time()
    res = fit(net, loss, batches, tc)
    h = res.history
    warm = h.iloc[0]  # time from the first log row on: excludes start-up and the first window read
    steps_timed, secs = h.step.iloc[-1] - warm.step, h.seconds.iloc[-1] - warm.seconds
    rep.update(train_s=time.time() - t, steps=res.steps, steps_per_s=steps_timed / secs,
               cells_per_s=steps_timed * args.batch_size / secs, final_loss=float(h.loss.iloc[-1]),
               first_loss=float(h.loss.iloc[0]), peak_rss_gb=peak_rss_gb(), rss_end_gb=rss_gb(),
               n_params=sum(p.numel() for p in net.parameters()))
    Path(args.report).mkdir(parents=True, exist_ok=True)
    (Path(args.report) / f'rank{ctx.rank}.json').write_text(json.dumps(rep, indent=1))
    if ctx.active:
        import torch.distributed as dist
        dist.barrier(); dist.destroy_process_group()


def launch(nproc: int, args, report: Path, device: str = 'cpu') -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    env['OMP_NUM_THREADS'] = str(args.threads or max(1, (os.cpu_count() or 2) // nproc))
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or 'torchrun'
    cmd = [torchrun, '--standalone', '--nproc_per_node', str(nproc), __file__, 'worker', '--data', str(args.data),
           '--report', str(report), '--steps', str(args.steps), '--batch-size', str(args.batch_size),
           '--n-top-genes', str(args.n_top_genes), '--prefetch', str(args.prefetch),
           '--read-steps', str(args.read_steps if nproc == 1 and device == 'cpu' else 0), '--device', device]
    t = time.time()
    subprocess.run(cmd, env=env, check=True)
    reps = [json.loads((report / f'rank{r}.json').read_text()) for r in range(nproc)]
    for r in reps: r['wall_s'] = time.time() - t
    return reps


# ---------------------------------------------------------------- 3. writing predictions: append vs concat_on_disk
def writer_comparison(workdir: Path, n_cells: int = 100_000, n_genes: int = 2000, chunk: int = 10_000) -> dict:
    import anndata as ad
    from anndata.experimental import concat_on_disk
    from perturbdiff.backed import H5adWriter
    chunks = list(synthetic_chunks(n_cells, n_genes, 0.3, seed=1, chunk=chunk, n_pert=20))
    genes = [f'GENE{i:05d}' for i in range(n_genes)]
    t = time.time()
    with H5adWriter(workdir / 'pred_append.h5ad', genes) as w:
        for X, obs in chunks: w.append(X, obs)
    append_s = time.time() - t
    t = time.time()
    files = []
    for i, (X, obs) in enumerate(chunks):
        f = workdir / f'pred_part{i}.h5ad'; ad.AnnData(X, obs=obs, var=pd_index(genes)).write_h5ad(f); files.append(f)
    concat_on_disk(files, workdir / 'pred_concat.h5ad')
    concat_s = time.time() - t
    a, b = ad.read_h5ad(workdir / 'pred_append.h5ad'), ad.read_h5ad(workdir / 'pred_concat.h5ad')
    assert (a.X != b.X).nnz == 0 and a.obs.index.equals(b.obs.index)
    for f in files: f.unlink()
    return dict(cells=n_cells, append_s=append_s, concat_on_disk_s=concat_s)


def pd_index(genes):
    import pandas as pd
    return pd.DataFrame(index=pd.Index(genes))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('phase', nargs='?', default='all', choices=['all', 'worker'])
    p.add_argument('--workdir', default='/tmp/perturbdiff_scale_bench')
    p.add_argument('--data'); p.add_argument('--report')
    p.add_argument('--cells', type=int, default=1_000_000); p.add_argument('--genes', type=int, default=2000)
    p.add_argument('--density', type=float, default=0.08)
    p.add_argument('--steps', type=int, default=300); p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--n-top-genes', type=int, default=1000); p.add_argument('--prefetch', type=int, default=2)
    p.add_argument('--read-steps', type=int, default=300)
    p.add_argument('--procs', default='1,2', help='numbers of CPU processes to compare (torchrun --nproc_per_node)')
    p.add_argument('--threads', type=int, default=0, help='OMP threads per process (default: cores / processes)')
    p.add_argument('--cuda', action='store_true', help='also train in one process on the GPU')
    p.add_argument('--device', default='cpu')
    p.add_argument('--reuse', action='store_true', help='reuse the h5ad of a previous run in --workdir')
    p.add_argument('--keep', action='store_true', help='keep the h5ad afterwards')
    args = p.parse_args()
    if args.phase == 'worker': return worker(args)

    work = Path(args.workdir); work.mkdir(parents=True, exist_ok=True)
    if str(work.resolve()).startswith(str(ROOT)): sys.exit("--workdir must be outside the repository.")
    need = args.cells * args.genes * args.density * 8 * 1.3 / 2 ** 30 + 1
    free = shutil.disk_usage(work).free / 2 ** 30
    print(f"free disk in {work}: {free:.0f} GB (need about {need:.1f} GB)")
    if free < need: sys.exit(f"Not enough free disk in {work}; pass --workdir elsewhere.")
    args.data = work / f'synthetic_{args.cells}x{args.genes}.h5ad'
    load = os.getloadavg()[0]
    dense_gb = args.cells * args.genes * 4 / 2 ** 30
    rows = []
    if not (args.reuse and args.data.exists()):
        w = subprocess.run([sys.executable, '-c', f"import sys, json; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                            f"import scale_bench as b; from pathlib import Path; print(json.dumps(b.write_file("
                            f"Path({str(args.data)!r}), {args.cells}, {args.genes}, {args.density})))"],
                           capture_output=True, text=True)
        if w.returncode: sys.exit(f"writing the h5ad failed:\n{w.stderr[-3000:]}")
        wr = json.loads(w.stdout.strip().splitlines()[-1])
        print(f"wrote {args.data}: {wr['file_gb']:.2f} GB on disk, {wr['zeros']:.1%} zeros, {wr['seconds']:.0f} s, "
              f"writer peak RSS {wr['peak_rss_gb']:.2f} GB")
        rows.append(dict(phase='write h5ad (1 process)', processes=1, peak_rss_gb=wr['peak_rss_gb'],
                         seconds=wr['seconds']))
    reports = {}
    for n in [int(x) for x in args.procs.split(',')]:
        reports[n] = launch(n, args, work / f'report_{n}proc')
    if args.cuda: reports['cuda'] = launch(1, args, work / 'report_cuda', device='cuda')
    for n, reps in reports.items():
        for r in reps:
            rows.append(dict(phase=f'train {args.steps} steps, ' + ('1 process, GPU' if n == 'cuda' else f'{n} '
                                                                                                         'process(es)'),
                             processes=1 if n == 'cuda' else n, rank=r['rank'],
                             threads=r['threads'], peak_rss_gb=r['peak_rss_gb'], open_s=r['open_s'],
                             split_s=r['split_s'],
                             train_s=r['train_s'], steps_per_s=r['steps_per_s'], cells_per_s=r['cells_per_s']))
    wc = writer_comparison(work)
    import pandas as pd
    table = pd.DataFrame(rows)
    table['rss_vs_dense_X'] = table.peak_rss_gb / dense_gb
    pd.set_option('display.width', 200)
    print(f"\nX: {args.cells:,} cells x {args.genes:,} genes; dense float32 size {dense_gb:.2f} GB")
    print(table.round(3).to_string(index=False))
    r1 = reports[1][0]
    print(f"\ntraining data: {r1['train_cells']:,} cells x {r1['genes']} HVGs after the split; streaming passes: "
          f"{r1['passes']}; network: Unlasting denoiser without GRN, {r1['n_params']:,} parameters; global batch "
          f"{args.batch_size}; loss {r1['first_loss']:.4f} -> {r1['final_loss']:.4f}")
    if 'read_block_cells_per_s' in r1:
        print(f"reading alone (1 process, batch {args.batch_size}): block order {r1['read_block_cells_per_s']:,.0f} "
              f"cells/s, random order {r1['read_random_cells_per_s']:,.0f} cells/s")
    c1 = reports[min(n for n in reports if n != 'cuda')][0]['cells_per_s']
    print(f"throughput (global cells/s, {os.cpu_count()} cores, load average before the runs {load:.1f}): " +
          ', '.join(f"{n} process(es) {reports[n][0]['cells_per_s']:,.0f} ({reports[n][0]['cells_per_s'] / c1:.2f}x)"
                    for n in reports if n != 'cuda') +
          (f"; GPU (1 process) {reports['cuda'][0]['cells_per_s']:,.0f}" if 'cuda' in reports else ''))
    print(f"writing {wc['cells']:,} predicted cells: H5adWriter append {wc['append_s']:.1f} s, "
          f"chunk files + concat_on_disk {wc['concat_on_disk_s']:.1f} s (ratio "
          f"{wc['concat_on_disk_s'] / wc['append_s']:.1f}x)")
    if not args.keep: args.data.unlink(missing_ok=True)
    for f in ('pred_append.h5ad', 'pred_concat.h5ad'): (work / f).unlink(missing_ok=True)


if __name__ == '__main__':
    main()
