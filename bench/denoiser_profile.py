"""Where Unlasting's prediction spends its time: the denoiser's parts, timed with forward hooks during `predict`.

    OMP_NUM_THREADS=2 python bench/denoiser_profile.py                     # 5,000 genes, bf16 autocast, groups of 10
    OMP_NUM_THREADS=2 python bench/denoiser_profile.py --pred-cells 10,100 --amp off

The model is the `paper` preset fitted for one step (and one mask step) on the simulator, as in `model_cost.py`
(5,000 genes, single-gene knockdowns, one cell type), with `--n-control` control cells inverted. For each number of
cells per group, `predict` runs on the held-out groups and every call of the denoiser, its trunk, its GRN block, the
fusing layer and the decoder is timed (wall clock, hooks around each module's forward). Printed: the seconds per part,
the number of denoiser evaluations, and the milliseconds per evaluation and per cell and evaluation (the batch of an
evaluation varies: the inversion runs on the control pool, the decoding on the groups).
"""
from __future__ import annotations

import argparse
import time
import warnings

import perturbdiff  # noqa: F401  (before torch: huge pages, as the package sets them)
import numpy as np
import torch

from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.models import Unlasting
from perturbdiff.priors import coexpression, edge_list


def simulated_split(genes: int, conditions: int) -> tuple:
    """The simulator at `genes` genes (single-gene knockdowns, one cell type, 500 controls, 50 cells per group) split
    with `conditions` of 10 groups held out, and the gene-graph prior (co-expression plus the simulator's true edges).
    Returns (split, prior)."""
    torch.manual_seed(0)
    sim = simulate(seed=0, n_genes=genes, n_regulators=10, n_single=conditions + 8, n_combo=0, cells_per_group=50,
                   n_control=500, n_cell_types=1)
    split = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').split(
        'unseen_perturbation', test_frac=conditions / (conditions + 8), seed=0)
    return split, [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]


def paper_unlasting(genes: int, conditions: int, n_control: int, amp: bool = False):
    """Unlasting's `paper` preset fitted for one step (and one mask step) on `simulated_split`'s data. Returns (model,
    split)."""
    split, prior = simulated_split(genes, conditions)
    model = Unlasting.from_preset('paper', seed=0, device='cpu', steps=1, mask_steps=1, n_control=n_control,
                                  graph=prior, progress=False, amp=amp).fit(split.train)
    return model, split


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--genes', type=int, default=5000)
    p.add_argument('--conditions', type=int, default=2)
    p.add_argument('--pred-cells', default='10', help='cells per group, comma-separated (one predict per value)')
    p.add_argument('--n-control', type=int, default=20)
    p.add_argument('--amp', default='on', choices=['on', 'off'])
    a = p.parse_args()
    warnings.filterwarnings('ignore')
    model, split = paper_unlasting(a.genes, a.conditions, a.n_control, a.amp == 'on')
    net = model.net_
    inner = getattr(net, 'net', net)  # under Preconditioned, or bare
    seconds, cells = {}, []
    def timed(name, module):
        def pre(m, args):
            seconds.setdefault(name, []).append(-time.perf_counter())
            if name == 'denoiser': cells.append(len(args[0]))
        def post(m, args, out): seconds[name][-1] += time.perf_counter()
        module.register_forward_pre_hook(pre); module.register_forward_hook(post)
    timed('denoiser', net)
    for name in ('trunk', 'fuse', 'grn', 'dec_in', 'decoder'):
        if getattr(inner, name, None) is not None: timed(name, getattr(inner, name))
    print(f'{a.genes} genes, graph {model.graph_.n_nodes} nodes / {model.graph_.n_edges} edges, amp {a.amp}, '
          f'{torch.get_num_threads()} threads, {a.n_control} inverted controls')
    for n in map(int, a.pred_cells.split(',')):
        seconds.clear(); cells.clear()
        t0 = time.perf_counter(); pred = model.predict(split.test, n_cells=n, seed=0); s = time.perf_counter() - t0
        evals, per_cell = len(seconds['denoiser']), sum(cells)
        print(f'\n{n} cells per group: {pred.n_obs} cells in {s:.1f} s ({pred.n_obs / s:.2f} cells/s), {evals} '
              f'denoiser evaluations of {per_cell / evals:.0f} cells on average')
        print('| part | s | ms per evaluation | ms per cell and evaluation |\n|---|---|---|---|')
        for name, v in seconds.items():
            print(f'| {name} | {np.sum(v):.2f} | {1000 * np.sum(v) / evals:.1f} | {1000 * np.sum(v) / per_cell:.2f} |')


if __name__ == '__main__':
    main()
