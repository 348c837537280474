#!/usr/bin/env bash
# The paper's Pythia-70M HALoS configuration on an accelerator, briefly: one prepared, bounded
# script for a lent GPU/TPU machine (docs/scale.md, "On an accelerator"). It prints
#   1. step_time_ms of one local step (64 x 2,048 tokens, 2 micro-batches of 32) on the device;
#   2. the memory plan per device (experiments.memory), with the device's own memory figure;
#   3. a few rounds of the replay (the paper's geo4 environment, 16 workers, H = 8, K = 32),
#      with the measured state bytes and replay throughput from summary.json.
# The Pile is not needed: the embedded corpus in 2,048-token sequences (wrap-around) stands in.
# Each part has its own time limit (seconds: STEP_S, PLAN_S, RUN_S); MODEL and STEPS override
# the model and the replayed local steps (MODEL=tiny SEQ=64 STEPS=32 runs it on a CPU host).
# Usage: bash benchmarks/accelerator_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/accelerator_check}
MODEL=${MODEL:-pythia-70m}
STEPS=${STEPS:-256}
SEQ=${SEQ:-2048}
if [ "$MODEL" = tiny ]; then VOCAB=${VOCAB:-256}; else VOCAB=${VOCAB:-50304}; fi
mkdir -p "$OUT"
DATA=(--config.data.source=shakespeare --config.data.tokenizer=byte --config.data.shuffle=True
      --config.data.wrap_around=True --config.data.seq_len="$SEQ" --config.data.val_sequences=16
      --config.data.vocab_size="$VOCAB")
COMMON=(--config=configs/halos.py --config.model.name="$MODEL" "${DATA[@]}")
status=0

echo "== device"
$PY -c "import jax; d = jax.devices(); print(len(d), 'x', d[0].platform, d[0].device_kind)"

echo "== 1. one local step"
timeout "${STEP_S:-300}" $PY benchmarks/step_time.py "${COMMON[@]}" --steps=5 --warmup=2 \
  | tee "$OUT/step_time.txt" || status=1

echo "== 2. memory plan"
timeout "${PLAN_S:-300}" $PY -m experiments.memory "${COMMON[@]}" | tee "$OUT/memory.txt" \
  || status=1

echo "== 3. replay: $STEPS local steps"
rm -rf "$OUT/run"
timeout "${RUN_S:-420}" $PY -m experiments.train "${COMMON[@]}" --workdir="$OUT/run" \
  --config.total_local_steps="$STEPS" --config.val_interval=100000 \
  --config.checkpoint_every=0 --config.checkpoint_every_s=0 --config.replay.plots=False \
  --config.replay.progress=False | tee "$OUT/train.txt" || status=1
if [ -f "$OUT/run/summary.json" ]; then
  $PY - "$OUT/run/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
wall = s["wall_time_s"]
computed = s["steps_computed"] * s["tokens"] / max(1, s["local_steps"])
print(f"replay: {s['local_steps']} steps counted, {s['steps_computed']} computed in {wall:.1f} s: "
      f"{s['tokens'] / wall:,.0f} simulated tokens/s, {computed / wall:,.0f} computed tokens/s; "
      f"state {s['state_bytes_total'] / 1e9:.2f} GB, fullest device "
      f"{s['state_bytes_max_device'] / 1e9:.2f} GB on {s['devices']} device(s)")
PY
fi
exit $status
