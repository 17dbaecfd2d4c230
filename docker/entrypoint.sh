#!/bin/sh
# Entry point of the training image (docker/train.Dockerfile): `fnac VERB ...`, with `train` launched under
# torchrun, one process per visible GPU (one process on a CPU-only host).
#
#   docker run --gpus all -v $PWD/data:/data -v $PWD/runs:/runs fnac-train train --data /data -o /runs/r1
#
# FNAC_NPROC      processes on this node (default: the number of visible GPUs, or 1)
# FNAC_NNODES     nodes (default 1: torchrun --standalone)
# FNAC_RDZV_ENDPOINT  host:port of the rendezvous for multi-node runs (same value on every node)
# FNAC_RDZV_ID    rendezvous id shared by the nodes of one job (default fnac)
# Anything else (`fnac synth`, `fnac export`, `fnac eval`, ...) runs as a plain process.
set -eu

if [ "${1:-}" != train ] || [ -n "${RANK:-}" ]; then
  exec fnac "$@"
fi

nproc="${FNAC_NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
nnodes="${FNAC_NNODES:-1}"
if [ "$nnodes" = 1 ] && [ -z "${FNAC_RDZV_ENDPOINT:-}" ]; then
  set -- --standalone --nproc-per-node "$nproc" "$(command -v fnac)" "$@"
else
  : "${FNAC_RDZV_ENDPOINT:?set FNAC_RDZV_ENDPOINT=host:port for a multi-node run}"
  set -- --nnodes "$nnodes" --nproc-per-node "$nproc" --rdzv-backend c10d \
    --rdzv-endpoint "$FNAC_RDZV_ENDPOINT" --rdzv-id "${FNAC_RDZV_ID:-fnac}" "$(command -v fnac)" "$@"
fi
echo "fnac-train: torchrun $*" >&2
exec torchrun "$@"
