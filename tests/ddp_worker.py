"""Jobs run by tests/test_ddp.py, in one process or under `torchrun --nproc_per_node 2` (gloo, CPU).

    python tests/ddp_worker.py JOB[,JOB...] OUT_DIR [H5AD]   (H5AD: the small file of the `backed` job)

Every job trains through the real engine (`perturbdiff.train.fit`) and writes, per rank, the final
state dict to OUT_DIR/<job>_rank<r>.pt (or <job>_single.pt in one process) plus the loss history.
"""
import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from perturbdiff.train import BatchSequence, TrainConfig, fit

N, D, GLOBAL_BATCH = 256, 8, 32


def world():
    return int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))


def tag():
    r, ws = world()
    return f'rank{r}' if ws > 1 else 'single'


def state_hash(sd: dict) -> str:
    h = hashlib.sha256()
    for k, v in sd.items(): h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save(out: Path, job: str, module: nn.Module, history, seconds: float, **extra):
    sd = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    torch.save(dict(state=sd, hash=state_hash(sd), history=history, seconds=seconds, **extra),
               out / f'{job}_{tag()}.pt')


def regression(noise: bool):
    "A toy regression: global batches of 32 cells, each rank taking rows[rank::world_size] (16 each on 2 ranks)."
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g); w = torch.randn(D, 1, generator=g)
    y = X @ w + 0.1 * torch.randn(N, 1, generator=g)

    def make_batches(epoch, rank=0, world_size=1):
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(1000 + epoch))
        plan = [perm[i:i + GLOBAL_BATCH] for i in range(0, N, GLOBAL_BATCH)]
        return BatchSequence(plan, lambda rows: dict(x=X[rows[rank::world_size]], y=y[rows[rank::world_size]]))

    def loss_fn(net, b, gen):
        x = b['x']
        if noise: x = x + 0.05 * torch.randn(x.shape, generator=gen, device=x.device)
        loss = ((net(x) - b['y']) ** 2).mean()  # a mean over cells: DDP's gradient average is the global mean
        return loss, dict(mse=loss.detach())
    return make_batches, loss_fn


def toy_net(dropout: float = 0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 32), nn.Tanh(), nn.Dropout(dropout), nn.Linear(32, 1))


def job_exact(out: Path):
    "Deterministic loss (no noise, no dropout): DDP must equal one process on the global batch."
    mb, lf = regression(noise=False)
    net, t = toy_net(), time.time()
    r = fit(net, lf, mb, TrainConfig(steps=40, lr=1e-2, log_every=8, progress=False, device='cpu'))
    save(out, 'exact', net, r.history, time.time() - t)


RESUME = dict(steps=40, lr=1e-2, log_every=5, progress=False, device='cpu', ema=0.9, grad_clip=1.0)


def job_whole(out: Path):
    "Noise from the generators and dropout from the global RNG, uninterrupted."
    mb, lf = regression(noise=True)
    net = toy_net(0.2); r = fit(net, lf, mb, TrainConfig(**RESUME))
    save(out, 'whole', net, r.history, 0.0)


def job_part(out: Path):
    "The same run, checkpointed every 5 steps and stopped after 13 (the next launch resumes from step 10)."
    mb, lf = regression(noise=True)
    r = fit(toy_net(0.2), lf, mb, TrainConfig(**RESUME, out_dir=str(out / 'ckpt'), ckpt_every=5), stop_after=13)
    assert (r.steps, r.finished) == (13, False)


def job_resume(out: Path):
    mb, lf = regression(noise=True)
    net = toy_net(0.2)
    with torch.no_grad():
        for p in net.parameters(): p.add_(1.0)  # a fresh process starts elsewhere; the checkpoint must win
    r = fit(net, lf, mb, TrainConfig(**RESUME, out_dir=str(out / 'ckpt'), ckpt_every=5, resume=True))
    assert (r.steps, r.finished) == (40, True)
    save(out, 'resume', net, r.history, 0.0)


def job_model(out: Path):
    "A tiny Doloris (denoiser + mask model) fitted under DDP: the models' own batch factories and losses."
    warnings.simplefilter('ignore')
    from perturbdiff.data import PerturbData
    from perturbdiff.datasets import simulate
    from perturbdiff.models import Doloris
    from perturbdiff.priors import coexpression, edge_list
    sim = simulate(seed=0, n_genes=30, n_regulators=4, n_single=6, n_combo=2, cells_per_group=16, n_control=64,
                   n_cell_types=1)
    split = PerturbData(sim, cell_type_key='cell_type',
                        mode_key='perturbation_type').split('unseen_perturbation', seed=0)
    prior = [coexpression(0.3), edge_list(sim.uns['simulation']['edges'], weight_col='weight')]
    m = Doloris.from_preset('plain', seed=0, device='cpu', progress=False, graph=prior, steps=12, batch_size=32,
                            hidden=32, time_dim=16, decoder=(32,), grn_dim=8, pca_dim=4, mask_steps=6, mask_hidden=16,
                            mask_batch_size=32, n_control=10, sampling_steps=10)
    t = time.time(); m.fit(split.train)
    save(out, 'model', m.net_, m.history_, time.time() - t, mask=m.mask_.net.state_dict())


def job_backed(out: Path, data: str):
    "Backed h5ad under DDP: the sharded streaming pass (split, HVGs, scale, control stats) and sharded OT pairing."
    warnings.simplefilter('ignore')
    from perturbdiff.bridges import BridgePairs, bridge_config
    from perturbdiff.backed import BackedPerturbData
    bk = BackedPerturbData(data, cell_type_key='cell_type', mode_key='perturbation_type')
    split = bk.split('unseen_perturbation', seed=0, n_top_genes=20)
    st = bk.source.cache[-1]
    pairs = BridgePairs(split.train, bridge_config('quick', batch_size=32), seed=0)
    res = dict(genes=list(split.train.genes), x_max=split.train.x_max, passes=bk.source.n_passes,
               gene_max=st.gene_max, hvg_mean=st.hvg.mean, hvg_m2=st.hvg.m2,
               control={k: (v.mean, v.std) for k, v in split.train.control_stats().items()},
               pairs0=pairs.pairs(0), pairs1=pairs.pairs(1))
    torch.save(res, out / f'backed_{tag()}.pt')


JOBS = dict(exact=job_exact, whole=job_whole, part=job_part, resume=job_resume, model=job_model, backed=job_backed)

if __name__ == '__main__':
    jobs, out = sys.argv[1].split(','), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if world()[1] > 1:  # join the process group before anything collective (the streaming pass, the pairing)
        from perturbdiff.train import distributed_context
        distributed_context(torch.device('cpu'))
    for j in jobs: JOBS[j](out, *sys.argv[3:]) if j == 'backed' else JOBS[j](out)
    if world()[1] > 1:
        import torch.distributed as dist
        dist.destroy_process_group()
