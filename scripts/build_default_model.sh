#!/usr/bin/env bash
# Reproduces the bundled default model (service/models/default.onnx) from nothing: synthetic data, training,
# export, calibration of the sounding threshold on val, evaluation on test (service/models/MODEL_CARD.md has the numbers).
# About 75 minutes on a 2-core CPU (1.7 min per epoch), a few minutes on one GPU.
#
#   scripts/build_default_model.sh [WORKDIR]     (default WORKDIR: runs/default-model)
set -euo pipefail
cd "$(dirname "$0")/.."
FNAC=${FNAC:-.venv/bin/fnac}
WORK=${1:-runs/default-model}
DATA=$WORK/synth_k10_headroom
RUN=$WORK/train
mkdir -p "$WORK"

# K=10 classes and seed 0: the classes `fnac synth` draws by default, so the quick start's clip is in domain.
"$FNAC" synth -o "$DATA" --preset headroom --classes 10 --train 12000 --val 500 --test 500 --image-size 128 \
  --mp4-clips 2 --seed 0 --priors
# The contrastive recipe (--baseline): from scratch, the FNAC terms stalled learning on this data (docs/BENCHMARKS.md).
# Phase 1: 32 epochs at lr 1e-3 (validation AP50 plateaus around 0.40); phase 2: 8 epochs at lr 1e-4 from its
# last epoch, where validation AP50 moves past the centre prior.
COMMON=(--data "$DATA" --baseline --width 16 --dim 128 --image-size 128 --batch-size 128 --dropout-img 0
  --cache-dir "$WORK/cache" --seed 0 --name fnac-synth-default)
"$FNAC" train "${COMMON[@]}" -o "$RUN/phase1" --epochs 32 --lr 1e-3
"$FNAC" train "${COMMON[@]}" -o "$RUN/phase2" --epochs 8 --lr 1e-4 --init-from "$RUN/phase1/last.pt"
RUN=$RUN/phase2
"$FNAC" export "$RUN/best.pt" -o "$WORK/default.onnx" --name fnac-synth-default
# Calibrates `sounding_threshold` on the VALIDATION split's negatives (silence, noise, off-screen) and stores it,
# then reports on the test split: localization, negative AUROCs and the sounding rates at that threshold.
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --split val --report "$WORK/calibration.json" --write-threshold
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --report "$WORK/eval.json"
echo "copy $WORK/default.onnx to service/models/default.onnx to bundle it"
