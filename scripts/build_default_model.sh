#!/usr/bin/env bash
# Reproduces the bundled default model (service/models/default.onnx) from nothing: synthetic data, training,
# export, calibration of the sounding threshold on val, evaluation on test (service/models/MODEL_CARD.md has the numbers).
# About 85 minutes on a 2-core CPU (3.2 min per epoch at 224 px), a few minutes on one GPU.
#
#   scripts/build_default_model.sh [WORKDIR]     (default WORKDIR: runs/default-model)
set -euo pipefail
cd "$(dirname "$0")/.."
FNAC=${FNAC:-.venv/bin/fnac}
WORK=${1:-runs/default-model}
DATA=$WORK/synth_k10_headroom_224
RUN=$WORK/train
mkdir -p "$WORK"

# K=10 classes and seed 0: the classes `fnac synth` draws by default, so the quick start's clip is in domain.
"$FNAC" synth -o "$DATA" --preset headroom --classes 10 --train 16000 --val 500 --test 500 --image-size 224 \
  --mp4-clips 2 --seed 0 --priors
COMMON=(--data "$DATA" --width 16 --dim 128 --image-size 224 --batch-size 128 --dropout-img 0
  --cache-dir "$WORK/cache" --seed 0 --name fnac-synth-default --lr 1e-3)
# Phase 1, the warm-up: contrastive only (--baseline). From scratch the FNAC terms stall learning on this data
# (docs/BENCHMARKS.md), so they come on only once the model localizes. 20 epochs; best on val: epoch 16.
"$FNAC" train "${COMMON[@]}" --baseline -o "$RUN/phase1" --epochs 20
# Phase 2: FNAC (contrastive + FNS-1 + FNS-2 + TNE) from phase 1's best epoch. Weights 50 = the recipe's 100 at
# its batch of 256, scaled to this batch of 128. 5 epochs; best on val: epoch 1.
"$FNAC" train "${COMMON[@]}" -o "$RUN/phase2" --epochs 5 --warmup-epochs 0 --fns1 50 --fns2 50 --tne 50 \
  --init-from "$RUN/phase1/best.pt"
"$FNAC" export "$RUN/phase2/best.pt" -o "$WORK/default.onnx" --name fnac-synth-default
# Calibrates `sounding_threshold` on the VALIDATION split's negatives (silence, noise, off-screen) and stores it,
# then reports on the test split: localization, negative AUROCs and the sounding rates at that threshold.
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --split val --report "$WORK/calibration.json" --write-threshold
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --report "$WORK/eval.json"
echo "copy $WORK/default.onnx to service/models/default.onnx to bundle it"
