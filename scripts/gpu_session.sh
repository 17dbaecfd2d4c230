#!/usr/bin/env bash
# A time-boxed GPU session (docs/BENCHMARKS.md, 2026-11-26): (1) training throughput, ours vs official-style,
# paper-size network; (2) K=10 headroom data at 224 px; (3) from scratch, sharing the GPU from one decode
# cache: full-size contrastive, full-size FNAC (batch 256, weights 100: the official scripts'), and a width-16
# 224-px contrastive run (lr 1e-3 until P1 seconds, then lr 1e-4 until P2), each stopped by its time limit.
#
#   scripts/gpu_session.sh [OUTDIR]      (default runs/gpu; P1, P2, NTRAIN, IMG, ... override the sizes)
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }; say() { echo "[$(el)s] $*"; }
export PYTHONUNBUFFERED=1
OUT=${1:-runs/gpu}; W=$OUT/work; mkdir -p "$W"
NTRAIN=${NTRAIN:-20000}; NVAL=${NVAL:-500}; IMG=${IMG:-224}; FULLW=${FULLW:-64}; FULLD=${FULLD:-512}
P1=${P1:-430}; P2=${P2:-495}
BENCH=${BENCH:---device cuda --width 64 --dim 512 --batch-size 128 --steps 24 --warmup 3 --rounds 3 --workers 16}
F="python3 -m fnac"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
say bench
# shellcheck disable=SC2086
timeout 170 python3 -m benchmarks.bench_train $BENCH --json "$OUT/bench_train_gpu.json" > "$W/bench.log" 2>&1
say "bench rc $?"; tail -9 "$W/bench.log"
$F synth -o "$W/k10" --preset headroom --classes 10 --train "$NTRAIN" --val "$NVAL" --test "$NVAL" --image-size "$IMG" \
  --workers 16 --priors > "$W/synth.log" 2>&1
say "synth rc $?"
D=$W/k10
C=(--data "$D" --image-size "$IMG" --lr 1e-3 --dropout-img 0 --cache-dir "$W/cache" --seed 0 --no-progress
  --val-batch-size 250 --epochs 200)
tr() {
  local name=$1 until=$2; shift 2
  timeout $(( until - $(el) )) $F train "${C[@]}" -o "$W/$name" "$@" > "$W/$name.log" 2>&1; echo "[$(el)s] $name rc $?"
}
SMALL=(--width 16 --dim 128 --batch-size 128 --baseline --name fnac-synth-default)
tr small "$P1" "${SMALL[@]}" --workers 14 &
# the first run decodes the training set; the others start once its cache is complete and read it
while [ -z "$(ls "$W"/cache/*/index.json 2>/dev/null)" ] && [ "$(el)" -lt "$P1" ]; do sleep 2; done; say "cache ready"
tr full_base "$P1" --width "$FULLW" --dim "$FULLD" --batch-size 256 --baseline --workers 4 &
tr full_fnac "$P1" --width "$FULLW" --dim "$FULLD" --batch-size 256 --warmup-epochs 5 --workers 4 &
wait; say "phase 1 done"
tr small2 "$P2" "${SMALL[@]}" --lr 1e-4 --init-from "$W/small/last.pt" --workers 8
# Evaluate exported models one at a time: several torch evaluations at once oversubscribe the CPU threads.
for r in small2 full_base full_fnac; do
  [ -f "$W/$r/best.pt" ] || continue
  $F export "$W/$r/best.pt" -o "$W/$r.onnx" > "$W/$r.export.log" 2>&1 &&
    $F eval --model "$W/$r.onnx" --data "$D" --report "$W/$r.eval.json" --no-negatives > "$W/$r.eval.log" 2>&1
  say "$r evaluated: $(grep -o '"ap50": [0-9.]*' "$W/$r.eval.json" | head -1)"
done
say end
