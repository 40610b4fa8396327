"""Cost of the three generative models at the papers' sizes (the `paper` preset), measured on this machine.

For each of Unlasting, Doloris and Departures, in its own process (so that peak RSS is that model's):

- training: seconds per optimiser step of the main network (median over the timed steps, after warm-up
  steps), and for Departures the seconds per epoch (one pass over the perturbed training cells,
  = batches per epoch x step time, OT pairing of the epoch included);
- peak resident memory (RSS) of the process, and its growth over the data already loaded; on CUDA also the peak GPU
  memory torch allocated (`gpu_peak_mb`);
- prediction: predicted cells per second; for the DDIB models with and without latent reuse
  (`reuse_latents`: invert the control cells once per cell type and decode them under every
  condition, Doloris appendix A.4, versus inverting again for every condition).

Data: the simulator (`perturbdiff.datasets.simulate`) with `--genes` measured genes (5,000 by default,
the size the issue asks about), single-gene knockdowns, one cell type. The gene graph is co-expression
on the training controls plus the simulator's true regulatory edges. The mask models are trained for
`--mask-steps` steps only (their cost is not what is timed here).

    OMP_NUM_THREADS=2 python bench/model_cost.py --genes 5000 --steps 12 --out bench/results

prints a table and writes `model_cost.csv` to `--out`. Set `--device cuda` on a GPU machine. `--fused both` runs each
model with AdamW's plain loop and with its fused kernel (`fused_adamw`, on in the paper presets), one after the other;
`--amp both` without and with bf16 autocast (the `amp` option, off in every preset); `--thp both` with torch's CPU
allocator on small pages and on transparent huge pages (THP_MEM_ALLOC_ENABLE=0/1; `import perturbdiff` sets 1);
`--predict-batch N` sets the cells per forward pass at prediction (a DDIB model decodes groups together up to that
many cells: `--predict-batch` = `--pred-cells` decodes each group alone). `--gat-kernel both` with the GAT's torch
kernel and its compiled (numba) kernel, the default on CPU (PERTURBDIFF_GAT_KERNEL). The variants run side by side,
each in its own process, in the order given.
"""
import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    "Current resident set size of this process (MB), from /proc."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_mb() -> float:
    "Peak resident set size of this process so far (MB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gat_cpu_kernel() -> str:
    "The GAT's CPU kernel in this process (perturbdiff.gat.GAT_CPU_KERNEL, from PERTURBDIFF_GAT_KERNEL)."
    from perturbdiff.gat import GAT_CPU_KERNEL, numba
    return GAT_CPU_KERNEL if numba is not None else 'torch'


def gpu_peak(torch, device: str) -> dict:
    "Peak GPU memory allocated by torch (MB) on a CUDA device; nothing on a CPU."
    return {'gpu_peak_mb': torch.cuda.max_memory_allocated() / 2**20} if device.startswith('cuda') else {}


def worker(a) -> dict:
    import torch
    from perturbdiff.data import PerturbData
    from perturbdiff.datasets import simulate
    from perturbdiff.models import Departures, Doloris, Unlasting
    from perturbdiff.priors import coexpression, edge_list
    warnings.filterwarnings('ignore')
    torch.manual_seed(0)
    sim = simulate(seed=0, n_genes=a.genes, n_regulators=10, n_single=a.conditions + 8, n_combo=0,
                   cells_per_group=a.cells_per_group, n_control=a.controls, n_cell_types=1)
    split = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').split(
        'unseen_perturbation', test_frac=a.conditions / (a.conditions + 8), seed=0)
    prior = [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]
    cls = dict(unlasting=Unlasting, doloris=Doloris, departures=Departures)[a.worker]
    say = lambda *m: print(f'[{a.worker} {time.strftime("%H:%M:%S")}]', *m, file=sys.stderr, flush=True)
    say('data ready:', sim.shape)
    warm, timed = 2, a.steps
    opts = dict(steps=warm + timed, progress=False, graph=prior)
    if a.worker != 'departures':
        opts.update(mask_steps=a.mask_steps, **({'n_control': a.n_control} if a.n_control else {}))
    if a.fused in ('on', 'off'): opts['fused_adamw'] = a.fused == 'on'
    if a.amp in ('on', 'off'): opts['amp'] = a.amp == 'on'
    if a.predict_batch: opts['predict_batch'] = a.predict_batch
    model = cls.from_preset('paper', seed=0, device=a.device, **opts)
    base = rss_mb()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter(); model.fit(split.train, log_every=1); fit_s = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    say(f'fitted in {fit_s:.1f} s; graph {model.graph_.n_nodes} nodes, {model.graph_.edge_index.shape[1]} edges')
    sec = np.diff(np.r_[0.0, model.history_.seconds.to_numpy()])[warm:]
    row = dict(model=a.worker, fused_adamw=model.config.fused_adamw, amp=model.config.amp,
               thp=os.environ.get('THP_MEM_ALLOC_ENABLE', ''), gat_kernel=gat_cpu_kernel(), device=a.device,
               minor_faults_per_step_in_fit=faults / (warm + timed),
               graph_edges=int(model.graph_.edge_index.shape[1]), genes=len(split.train.genes),
               train_cells=len(split.train.obs),
               batch_size=model.config.batch_size, predict_batch=model.config.predict_batch, timed_steps=len(sec),
               step_s=float(np.median(sec)),
               step_s_min=float(sec.min()), fit_s_total=fit_s,
               params_M=sum(p.numel() for p in model.net_.parameters()) / 1e6)
    if a.worker == 'departures':
        n_batches = len(model.batches_)  # batches of one pass over the perturbed training cells
        row.update(batches_per_epoch=n_batches, epoch_s=n_batches * row['step_s'])
    n_pred = a.conditions * a.pred_cells
    if a.worker in a.no_predict.split(','):
        row.update(rss_base_mb=base, peak_rss_mb=peak_mb(), peak_growth_mb=peak_mb() - base,
                   **gpu_peak(torch, a.device), torch_threads=torch.get_num_threads())
        return row
    variants = [('reuse', True), ('no_reuse', False)] if a.worker != 'departures' else [('', None)]
    model.predict(split.test, n_cells=4, seed=0)  # warm-up
    for tag, reuse in variants:
        if reuse is not None: model.config.reuse_latents = reuse
        t0 = time.perf_counter(); pred = model.predict(split.test, n_cells=a.pred_cells, seed=0)
        s = time.perf_counter() - t0
        say(f'predicted {pred.n_obs} cells ({tag or "-"}) in {s:.1f} s')
        assert pred.n_obs == n_pred, (pred.n_obs, n_pred)
        row[f'predict_cells_per_s{"_" + tag if tag else ""}'] = n_pred / s
    row.update(rss_base_mb=base, peak_rss_mb=peak_mb(), peak_growth_mb=peak_mb() - base, **gpu_peak(torch, a.device),
               torch_threads=torch.get_num_threads())
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default='unlasting,doloris,departures')
    p.add_argument('--genes', type=int, default=5000)
    p.add_argument('--steps', type=int, default=12, help='timed training steps (after 2 warm-up steps)')
    p.add_argument('--mask-steps', type=int, default=5)
    p.add_argument('--conditions', type=int, default=4, help='held-out conditions predicted')
    p.add_argument('--pred-cells', type=int, default=100, help='predicted cells per condition')
    p.add_argument('--cells-per-group', type=int, default=50)
    p.add_argument('--controls', type=int, default=500)
    p.add_argument('--n-control', type=int, default=None,
                   help='DDIB models: control cells inverted per cell type with latent reuse (preset: 100)')
    p.add_argument('--predict-batch', type=int, default=None,
                   help="cells per forward pass at prediction (the preset's: 1,024 DDIB, 512 Departures); the DDIB "
                        "models decode the groups of a cell type together up to this many cells")
    p.add_argument('--device', default='cpu')
    p.add_argument('--no-predict', default='', help='models whose prediction is not timed (too slow at this size)')
    p.add_argument('--out', default=None)
    p.add_argument('--amp', default='preset', choices=['preset', 'on', 'off', 'both'],
                   help='bf16 autocast in training and prediction (the amp option)')
    p.add_argument('--thp', default='on', choices=['on', 'off', 'both'],
                   help="torch's CPU allocator on transparent huge pages (THP_MEM_ALLOC_ENABLE)")
    p.add_argument('--fused', default='preset', choices=['preset', 'on', 'off', 'both'],
                   help="AdamW's fused kernel (fused_adamw): the preset's (on), on, off, or both side by side")
    p.add_argument('--gat-kernel', default='numba', choices=['numba', 'torch', 'both'],
                   help="the GAT's CPU kernel (PERTURBDIFF_GAT_KERNEL): compiled by numba (the default) or torch's")
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print('RESULT ' + json.dumps(worker(a))); return
    import pandas as pd
    rows = []
    for m in a.models.split(','):
        both = lambda v: ('off', 'on') if v == 'both' else (v,)
        kernels = ('torch', 'numba') if a.gat_kernel == 'both' else (a.gat_kernel,)
        for fused, amp, thp, kernel in itertools.product(both(a.fused), both(a.amp), both(a.thp), kernels):  # side by
                                                                                                  # side, own processes
            args = [sys.executable, __file__, '--worker', m] + [
                f'--{k.replace("_", "-")}={v}' for k, v in {**vars(a), 'fused': fused, 'amp': amp}.items()
                if k not in ('worker', 'models', 'out', 'thp', 'gat_kernel') and v is not None]
            env = {**os.environ, 'THP_MEM_ALLOC_ENABLE': '1' if thp == 'on' else '0', 'PERTURBDIFF_GAT_KERNEL': kernel}
            r = subprocess.run(args, stdout=subprocess.PIPE, text=True, env=env)  # stderr: the worker's progress
            line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
            if r.returncode or not line: sys.exit(f'{m} failed (exit {r.returncode}); its messages are above')
            rows.append(json.loads(line[0][7:])); print(rows[-1], flush=True)
    tab = pd.DataFrame(rows).set_index(['model', 'fused_adamw', 'amp', 'thp', 'gat_kernel'])
    pd.set_option('display.width', 200)
    print(tab.T.to_string())
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True); tab.to_csv(Path(a.out) / 'model_cost.csv')


if __name__ == '__main__':
    main()
