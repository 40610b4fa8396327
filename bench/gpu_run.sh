#!/usr/bin/env bash
# One GPU session's checks (issue 13): the CUDA tests, then the learnability ladder on Norman with the paper presets,
# model by model, each under a time limit, every table written to OUT as soon as it exists.
#
#   OUT=/path/to/folder bench/gpu_run.sh                  # on a GPU machine (device=cuda)
#   OUT=/tmp/dry DEVICE=cpu STEPS=3 SAMPLING=5 bench/gpu_run.sh   # the dry run on a CPU: tiny steps, same code path
#
# Environment: OUT (default results/gpu), DEVICE (cuda), METRICS (1, the default: bench/metrics_bench.py --quick;
# 0: skip), COST (1, the default: issue 18's model_cost at COST_GENES,
# default "500 5000" genes, float32 and bf16 autocast side by side, then DDIB prediction with and without packed groups;
# 0: skip), EXPERIMENTS (1: also Norman's table per preset, paper and
# authors_code), STEPS (unset: the presets' steps), SAMPLING (unset: the presets'
# sampling_steps of every trained model), LIMIT (seconds per model, 600),
# DATA (../shared/data/perturbench_devel.h5ad), PY (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}; DEVICE=${DEVICE:-cuda}; LIMIT=${LIMIT:-600}; PY=${PY:-python3}
DATA=${DATA:-../shared/data/perturbench_devel.h5ad}
mkdir -p "$OUT"
"$PY" - <<'PY' > "$OUT/device.txt" 2>&1
import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
                    torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
PY
if [ "$DEVICE" = cuda ]; then
  timeout "$LIMIT" "$PY" -m pytest -q -m cuda tests 2>&1 | tail -20 > "$OUT/cuda_tests.txt" || echo "CUDA tests failed or timed out" >> "$OUT/cuda_tests.txt"
fi
if [ "${METRICS:-1}" = 1 ]; then  # issue 18: EMD and E-distance against scipy, numpy and torch paths (cuda when there)
  timeout "$LIMIT" "$PY" bench/metrics_bench.py --quick > "$OUT/metrics_bench.txt" 2>&1 || echo "metrics_bench: failed or timed out" >> "$OUT/failures.txt"
fi
if [ "${COST:-1}" = 1 ]; then  # issue 18: ms per step, peak memory, predicted cells/s; fp32 and bf16 side by side
  for genes in ${COST_GENES:-500 5000}; do
    timeout "$LIMIT" "$PY" bench/model_cost.py --device "$DEVICE" --genes $genes --steps ${STEPS:-20} --amp both \
      --out "$OUT/cost_$genes" > "$OUT/cost_$genes.log" 2>&1 || echo "model_cost $genes: failed or timed out" >> "$OUT/failures.txt"
  done
  # DDIB prediction with the groups of a cell type decoded together (predict_batch 1,024, the default) against each
  # group of 20 cells alone (predict_batch 20), 8 groups, 500 genes
  for pb in 1024 20; do
    timeout "$LIMIT" "$PY" bench/model_cost.py --device "$DEVICE" --models doloris,unlasting --genes 500 --steps 2 \
      --conditions 8 --pred-cells 20 --predict-batch $pb --out "$OUT/pack_$pb" > "$OUT/pack_$pb.log" 2>&1 \
      || echo "model_cost predict_batch $pb: failed or timed out" >> "$OUT/failures.txt"
  done
fi
for m in doloris unlasting departures; do
  sets=()
  if [ -n "${STEPS:-}" ]; then
    if [ $m = departures ]; then sets=(--set "$m.steps=$STEPS"); else sets=(--set "$m.steps=$STEPS" --set "$m.mask_steps=$STEPS"); fi
  fi
  if [ -n "${SAMPLING:-}" ]; then
    sets+=(--set "$m.sampling_steps=$SAMPLING")
  fi
  for preset in paper quick; do
    s0=(); if [ $preset = paper ]; then s0=(--no-step0); fi  # step 0 refits the model: only for the quick presets here
    timeout "$LIMIT" "$PY" bench/ladder.py --data "$DATA" --models "$m" --preset $preset --device "$DEVICE" \
      "${sets[@]}" "${s0[@]}" --out "$OUT/${m}_$preset" > "$OUT/${m}_$preset.log" 2>&1 || echo "$m $preset: failed or timed out" >> "$OUT/failures.txt"
  done
done
"$PY" bench/ladder.py --data "$DATA" --models anchor,additive,linear,mean,control --device cpu --no-step0 --out "$OUT/baselines" > "$OUT/baselines.log" 2>&1
# Issue 16 (EXPERIMENTS=1): Norman's pairs with the papers' presets and the authors' code's, every trained model and the
# baselines in one table each, both E-distance conventions (edist: eq. 20; edist_authors: the authors' code's)
if [ "${EXPERIMENTS:-0}" = 1 ]; then
  allsets=()
  for m in doloris unlasting departures; do
    if [ -n "${STEPS:-}" ]; then allsets+=(--set "$m.steps=$STEPS"); fi
    if [ -n "${STEPS:-}" ] && [ $m != departures ]; then allsets+=(--set "$m.mask_steps=$STEPS"); fi
    if [ -n "${SAMPLING:-}" ]; then allsets+=(--set "$m.sampling_steps=$SAMPLING"); fi
  done
  for preset in paper authors_code; do
    timeout $((3 * LIMIT)) "$PY" -c "import sys; from perturbdiff.cli import main; sys.exit(main())" benchmark \
      --data "$DATA" --subset dataset=norman19 --cell-type-key cell_type --mode CRISPRa --split unseen_combo \
      --test-frac 1 --models doloris,unlasting,departures,additive,mean,control --preset $preset --device "$DEVICE" \
      --metrics edist,emd,rmse,pcc_act,edist_authors "${allsets[@]}" --out "$OUT/norman_$preset" --quiet \
      > "$OUT/norman_$preset.log" 2>&1 || echo "norman $preset: failed or timed out" >> "$OUT/failures.txt"
  done
fi
"$PY" - "$OUT" <<'PY'
import sys, pandas as pd, pathlib
out = pathlib.Path(sys.argv[1]); rows = []
for f in sorted(out.glob('*/ladder.csv')):
    t = pd.read_csv(f); t.insert(0, 'run', f.parent.name); rows.append(t)
if rows: pd.concat(rows).to_csv(out / 'ladder_all.csv', index=False); print(pd.concat(rows).round(3).to_string(index=False))
PY
