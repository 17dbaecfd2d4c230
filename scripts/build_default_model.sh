#!/usr/bin/env bash
# Reproduces the bundled default model (service/models/default.onnx) from nothing: synthetic data, training,
# export, calibration of the sounding threshold, evaluation. About 20–40 minutes on a 2-core CPU.
#
#   scripts/build_default_model.sh [WORKDIR]     (default WORKDIR: runs/default-model)
set -euo pipefail
cd "$(dirname "$0")/.."
FNAC=${FNAC:-.venv/bin/fnac}
WORK=${1:-runs/default-model}
DATA=$WORK/synth_easy
RUN=$WORK/train
mkdir -p "$WORK"

"$FNAC" synth -o "$DATA" --classes 6 --train 6000 --val 200 --test 500 --image-size 128 --distractors 0 1 --area-range 0.1 0.6 \
  --mp4-clips 4 --workers 2 --seed 0 --priors
"$FNAC" train --data "$DATA" -o "$RUN" --epochs 15 --warmup-epochs 3 --width 16 --dim 128 --image-size 128 \
  --batch-size 64 --lr 1e-3 --dropout-img 0.0 --workers 2 --seed 0 --name fnac-synth-default --no-progress
"$FNAC" export "$RUN/best.pt" -o "$WORK/default.onnx" --name fnac-synth-default
# Calibrates `sounding_threshold` on the test split's negatives (silence, noise, off-screen) and stores it in the model.
"$FNAC" eval --model "$WORK/default.onnx" --data "$DATA" --report "$WORK/eval.json" --write-threshold
"$FNAC" export "$RUN/best.pt" -o "$WORK/default-int8.onnx" --int8 --calib-data "$DATA" --name fnac-synth-default-int8
"$FNAC" eval --model "$WORK/default-int8.onnx" --data "$DATA" --report "$WORK/eval-int8.json" --no-negatives
echo "copy $WORK/default.onnx to service/models/default.onnx to bundle it"
