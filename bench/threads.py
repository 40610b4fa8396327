"""How many CPU threads to train with (issue 19): Doloris' training steps per second at 1 and 2 torch threads, on an
idle machine and beside one busy process (a pure-Python loop on one core), at two sizes.

    python bench/threads.py                  # tiny (the tests' size) and quick preset on the simulator
    python bench/threads.py --steps 40 --repeats 3

Each measurement runs in a fresh process (threads cannot be changed back reliably once OpenMP has started) with
OMP_NUM_THREADS unset and `torch.set_num_threads(n)`; the time is the median over --repeats of the wall time of
`fit` divided by its steps, after one warm-up fit. Prints a markdown table of steps per second.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings('ignore')
import torch
threads, steps, size, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
from perturbdiff.data import PerturbData
from perturbdiff.datasets import simulate
from perturbdiff.models import Doloris
if size == 'tiny':
    sim = simulate(seed=0, n_genes=40, n_regulators=4, n_single=8, n_combo=3, cells_per_group=12, n_control=60)
    opts = dict(hidden=16, time_dim=8, decoder=(16,), grn_dim=4, pca_dim=4)
else:
    sim = simulate(seed=0)
    opts = {}
train = PerturbData(sim, cell_type_key='cell_type', mode_key='perturbation_type').split('unseen_combo', seed=0).train
def run(n):
    t = time.perf_counter()
    Doloris.from_preset('quick', seed=0, device='cpu', progress=False, steps=n, **opts).fit(train)
    return time.perf_counter() - t
run(2)  # warm-up: imports, graph, first allocations
base = run(1)  # what a fit costs besides its steps (graph, network, mask set-up)
times = sorted((run(steps) - base) / (steps - 1) for _ in range(repeats))
print(json.dumps(dict(threads=torch.get_num_threads(), sec_per_step=times[len(times) // 2])))
"""


def measure(threads: int, steps: int, size: str, repeats: int, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        p = subprocess.run([sys.executable, '-c', CHILD, str(threads), str(steps), size, str(repeats)],
                           capture_output=True, text=True, env=env, timeout=1800)
    finally:
        if hog is not None: hog.kill(); hog.wait()
    if p.returncode: raise SystemExit(p.stderr[-2000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out['threads'] == threads
    return 1.0 / out['sec_per_step']


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--sizes', default='tiny,quick')
    a = ap.parse_args()
    print(f'CPUs: {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}); Doloris, {a.steps} steps, median of '
          f'{a.repeats}\n')
    print('| size | machine | 1 thread (steps/s) | 2 threads (steps/s) | 2 / 1 |\n|---|---|---|---|---|')
    for size in a.sizes.split(','):
        for busy in (False, True):
            one, two = (measure(t, a.steps, size, a.repeats, busy) for t in (1, 2))
            print(f"| {size} | {'one busy process beside' if busy else 'idle'} | {one:.1f} | {two:.1f} | "
                  f"{two / one:.2f} |", flush=True)


if __name__ == '__main__':
    main()
