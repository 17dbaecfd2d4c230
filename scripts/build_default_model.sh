#!/usr/bin/env bash
# Reproduces the bundled default model (service/models/default.onnx) from nothing: synthetic data, training,
# export, calibration of the sounding threshold on val, evaluation on test (service/models/MODEL_CARD.md has the numbers).
# On one GPU the training takes about 5 minutes; on a 2-core CPU about 2 minutes per epoch.
#
#   scripts/build_default_model.sh [WORKDIR] [EPOCHS]     (default WORKDIR: runs/default-model, EPOCHS: 16)
set -euo pipefail
cd "$(dirname "$0")/.."
FNAC=${FNAC:-.venv/bin/fnac}
WORK=${1:-runs/default-model}
EPOCHS=${2:-16}
DATA=$WORK/synth_k10_headroom
RUN=$WORK/train
mkdir -p "$WORK"

# K=10 classes and seed 0: the classes `fnac synth` draws by default, so the quick start's clip is in domain.
"$FNAC" synth -o "$DATA" --preset headroom --classes 10 --train 12000 --val 500 --test 500 --image-size 128 \
  --mp4-clips 2 --seed 0 --priors
# The contrastive recipe (--baseline): from scratch, the FNAC terms stalled learning on this data (docs/BENCHMARKS.md).
"$FNAC" train --data "$DATA" -o "$RUN" --baseline --epochs "$EPOCHS" --width 16 --dim 128 --image-size 128 \
  --batch-size 128 --lr 1e-3 --dropout-img 0 --cache-dir "$WORK/cache" --seed 0 --name fnac-synth-default
"$FNAC" export "$RUN/best.pt" -o "$WORK/default.onnx" --name fnac-synth-default
# Calibrates `sounding_threshold` on the VALIDATION split's negatives (silence, noise, off-screen) and stores it,
# then reports on the test split: localization, negative AUROCs and the sounding rates at that threshold.
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --split val --report "$WORK/calibration.json" --write-threshold
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --report "$WORK/eval.json"
echo "copy $WORK/default.onnx to service/models/default.onnx to bundle it"
