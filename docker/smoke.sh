#!/usr/bin/env bash
# End-to-end check of the serving image: build it, run it, localize a real clip over HTTP, check it runs as
# a non-root user, clean up. Exits non-zero on any failure. CI runs it after `make test` (see .ci/run).
#
#   docker/smoke.sh
#
# Environment (all optional):
#   CUDA_MAJOR=13|12  which onnxruntime-gpu line to build (default 13, the image's default)
#   CUDA_WHEELS=0|1   leave the CUDA runtime wheels out of the test build (default 0: same code, GBs smaller)
#   BASE_IMAGE        default local/debian:bookworm, made with docker/make_base.sh when missing (no registry
#                     needed); set python:3.11-slim where a registry is reachable
#   SMOKE_IMAGE       tag to build (default fnac:smoke)
#   SMOKE_MODEL       an .onnx file to serve from /models instead of the bundled service/models/default.onnx
#   PIP_CERT_FILE     CA bundle for PyPI, passed as the BuildKit secret pip_cert (default: the system bundle)
#   PYTHON            python with the project's train extra, to export a tiny model when none is bundled
#                     (default .venv/bin/python)
#   KEEP_DOCKERD=1    leave a Docker daemon this script started running afterwards
#
# Needs root on a machine without Docker (apt-get install, dockerd). Docker state (base image, build cache)
# stays between runs on the same machine, so the second run rebuilds nothing that did not change.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # dockerd, debootstrap

cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-/usr/bin/docker}"
IMAGE="${SMOKE_IMAGE:-fnac:smoke}"
BASE_IMAGE="${BASE_IMAGE:-local/debian:bookworm}"
CUDA_WHEELS="${CUDA_WHEELS:-0}"
CUDA_MAJOR="${CUDA_MAJOR:-13}"
PIP_CERT_FILE="${PIP_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
PYTHON="${PYTHON:-.venv/bin/python}"
HOST_PYTHON="$(command -v python3)"

started=$SECONDS
http_get() {
  "$HOST_PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' \
    "$1" 2>/dev/null
}
log() { printf '[smoke %4ds] %s\n' $((SECONDS - started)) "$*"; }
die() {
  printf '[smoke %4ds] FAIL: %s\n' $((SECONDS - started)) "$*" >&2
  exit 1
}

workdir="$(mktemp -d /tmp/fnac-smoke.XXXXXX)"
container="fnac-smoke-$$"
dockerd_pid=""
cleanup() {
  local rc=$?
  if [[ -n "${container_started:-}" ]]; then
    if ((rc != 0)); then
      echo "---- container logs (last 60 lines) ----" >&2
      "$DOCKER" logs --tail 60 "$container" >&2 2>&1 || true
    fi
    "$DOCKER" rm -f "$container" >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
  if [[ -n "$dockerd_pid" && "${KEEP_DOCKERD:-0}" != 1 ]]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  if ((rc == 0)); then log "PASS"; else log "exit status $rc"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------- docker
if [[ ! -x "$DOCKER" ]] || { [[ "$BASE_IMAGE" == local/* ]] && ! command -v debootstrap >/dev/null; }; then
  log "installing docker.io and debootstrap with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io debootstrap >"$workdir/apt.log" 2>&1 || { tail -20 "$workdir/apt.log"; die "apt-get install failed"; }
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
  # No registry, no iptables, no bridge here: vfs storage and host networking (see the environment notes).
  log "starting dockerd (vfs storage, no iptables, no bridge)"
  setsid "$(command -v dockerd || echo /usr/sbin/dockerd)" --storage-driver=vfs --iptables=false --bridge=none >/var/log/fnac-dockerd.log 2>&1 </dev/null &
  dockerd_pid=$!
  for _ in $(seq 120); do
    "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 /var/log/fnac-dockerd.log >&2; die "dockerd exited"; }
    sleep 0.5
  done
  "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not answer within 60 s (log: /var/log/fnac-dockerd.log)"
fi

# ---------------------------------------------------------------------------------------------- build
if [[ "$BASE_IMAGE" == local/* ]] && ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "making base image $BASE_IMAGE with debootstrap"
  docker/make_base.sh "$BASE_IMAGE"
fi

secret=()
[[ -s "$PIP_CERT_FILE" ]] && secret=(--secret "id=pip_cert,src=$PIP_CERT_FILE")
previous_id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
log "building $IMAGE (BASE_IMAGE=$BASE_IMAGE CUDA_MAJOR=$CUDA_MAJOR CUDA_WHEELS=$CUDA_WHEELS)"
build_start=$SECONDS
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "CUDA_MAJOR=$CUDA_MAJOR" --build-arg "CUDA_WHEELS=$CUDA_WHEELS" \
  "${secret[@]}" \
  -t "$IMAGE" . >"$workdir/build.log" 2>&1 || { tail -60 "$workdir/build.log" >&2; die "docker build failed"; }
image_id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")"
image_mb="$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f", $1 / 1e6}')"
log "built $IMAGE in $((SECONDS - build_start)) s: ${image_mb} MB"
# The previous build of this tag is now dangling; with vfs storage every such image is a full copy on disk.
if [[ -n "$previous_id" && "$previous_id" != "$image_id" ]]; then
  "$DOCKER" rmi "$previous_id" >/dev/null 2>&1 || true
fi
# After a build that changed the image, build-cache records it did not use (older source trees, ~1 GB each
# on vfs) are dropped when this script owns the daemon (it started it, as in CI); a daemon someone else runs
# is left alone (SMOKE_PRUNE=1 or 0 forces either way). What this build used stays: the next run is warm.
if [[ "$previous_id" != "$image_id" && "${SMOKE_PRUNE:-$([[ -n "$dockerd_pid" ]] && echo 1 || echo 0)}" == 1 ]]; then
  "$DOCKER" builder prune -f --filter "until=$((SECONDS - build_start + 120))s" >/dev/null || true
fi

# ---------------------------------------------------------------------------------------------- model
run_model=()
if [[ -n "${SMOKE_MODEL:-}" ]]; then
  install -m 0644 "$SMOKE_MODEL" "$workdir/models/smoke.onnx" -D
elif [[ ! -f service/models/default.onnx ]]; then
  log "no bundled model yet: exporting a tiny one with $PYTHON"
  mkdir -p "$workdir/models"
  "$PYTHON" -c "
from model.config import FNACConfig
from model.export import export_onnx
from model.fnac import FNAC
export_onnx(FNAC(FNACConfig(width=8, dim=32, image_size=64)), '$workdir/models/smoke.onnx', {'model_name': 'smoke'})
" >"$workdir/export.log" 2>&1 || { tail -20 "$workdir/export.log" >&2; die "exporting the smoke model failed"; }
fi
if [[ -f "$workdir/models/smoke.onnx" ]]; then
  chmod 0755 "$workdir" "$workdir/models"
  chmod 0644 "$workdir/models/smoke.onnx"   # the server runs as uid 10001
  run_model=(-v "$workdir/models:/models:ro" -e FNAC_MODEL=/models/smoke.onnx)
  log "serving a mounted model: /models/smoke.onnx"
else
  log "serving the bundled model"
fi

# ---------------------------------------------------------------------------------------------- run
port="$("$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log "starting container $container on port $port"
container_started=1
"$DOCKER" run -d --name "$container" --network host \
  -e FNAC_PORT="$port" "${run_model[@]}" \
  --health-interval 2s --health-timeout 5s --health-start-period 120s \
  "$IMAGE" >/dev/null

ready=""
for _ in $(seq 240); do
  if [[ "$("$DOCKER" inspect -f '{{.State.Running}}' "$container")" != true ]]; then
    die "container exited before it was ready"
  fi
  if ready="$(http_get "http://127.0.0.1:$port/readyz")"; then break; fi
  ready=""
  sleep 0.5
done
[[ -n "$ready" ]] || die "/readyz did not answer 200 within 120 s"
log "ready: $ready"

# Real H.264 + AAC clips, written by the image's own PyAV inside the running container (no host
# dependencies, and no second container: on vfs storage each new container copies the whole image): 4 s,
# 320x240, 44.1 kHz stereo, a bright square on a dark background, with a tone and with digital silence.
mkdir -p "$workdir/clip"
"$DOCKER" exec -i "$container" python - <<'EOF' || die "writing the synthetic clips failed"
import av
import numpy as np


def write_clip(path: str, amplitude: float) -> None:
    fps, seconds, rate = 10, 4, 44100
    with av.open(path, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        frame_rgb = np.full((240, 320, 3), 20, np.uint8)
        frame_rgb[60:180, 180:300] = (230, 200, 40)
        for _ in range(fps * seconds):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        t = np.arange(rate * seconds) / rate
        wave = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, wave.size, 1024):
            chunk = np.ascontiguousarray(np.stack([wave[start : start + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


write_clip("/tmp/smoke-clip.mp4", 0.4)
write_clip("/tmp/smoke-silent.mp4", 0.0)
EOF
for name in clip silent; do
  "$DOCKER" cp "$container:/tmp/smoke-$name.mp4" "$workdir/clip/$name.mp4" || die "copying the $name clip out failed"
done
log "wrote $(stat -c %s "$workdir/clip/clip.mp4")- and $(stat -c %s "$workdir/clip/silent.mp4")-byte H.264+AAC clips"

"$HOST_PYTHON" docker/smoke_check.py "$port" "$workdir/clip/clip.mp4" "$workdir/clip/silent.mp4" \
  || die "/localize did not answer as expected"

# The server must not run as root: the uid of every `fnac serve` process in the container (PID 1 here).
# shellcheck disable=SC2016  # the script runs in the container's sh
server_uids="$("$DOCKER" exec "$container" sh -c 'for p in /proc/[0-9]*; do
  case "$(tr "\0" " " <"$p/cmdline" 2>/dev/null)" in *"bin/fnac serve"*) awk "/^Uid:/ {print \$2; print \$3; print \$4; print \$5}" "$p/status";; esac
done' | sort -u | tr '\n' ' ')"
[[ -n "$server_uids" ]] || die "no 'fnac serve' process found in the container"
[[ " $server_uids" != *" 0 "* ]] || die "the server runs as root (uids: $server_uids)"
log "server process uid: $server_uids"

# The image's HEALTHCHECK (python urllib on /healthz) must turn healthy.
health=""
for _ in $(seq 60); do
  health="$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$container")"
  [[ "$health" == healthy ]] && break
  sleep 1
done
[[ "$health" == healthy ]] || die "HEALTHCHECK status is '$health': $("$DOCKER" inspect -f '{{json .State.Health}}' "$container")"
log "HEALTHCHECK: healthy"

# One clear log line says which execution provider runs (CPU here: no GPU in CI).
logs="$("$DOCKER" logs "$container" 2>&1)"
provider_line="$(grep -m1 "loaded with providers" <<<"$logs" || true)"
[[ -n "$provider_line" ]] || die "no 'loaded with providers' log line"
log "provider log line: $provider_line"
# The runtime verdict (as `fnac doctor` says it) is logged at start and shown by /readyz; no GPU in CI.
verdict_line="$(grep -m1 '"runtime: ' <<<"$logs" || grep -m1 'runtime: ' <<<"$logs" || true)"
[[ -n "$verdict_line" ]] || die "no 'runtime: ...' verdict log line"
[[ "$ready" == *'"runtime_status":"cpu"'* || "$ready" == *'"runtime_status":"gpu"'* ]] \
  || die "/readyz lacks the runtime verdict: $ready"
log "runtime verdict: $verdict_line"
# FNAC_REQUIRE_GPU=true must refuse to serve on a machine without a GPU, in one line (a throwaway process in
# the running container, not a second container: each one copies the whole image on vfs storage).
if ! grep -q '"runtime_status":"gpu"' <<<"$ready"; then
  if refusal="$("$DOCKER" exec -e FNAC_REQUIRE_GPU=true -e FNAC_PORT=0 "$container" fnac serve 2>&1)"; then
    die "FNAC_REQUIRE_GPU=true started without a GPU: $refusal"
  fi
  [[ "$(wc -l <<<"$refusal")" == 1 && "$refusal" == *FNAC_REQUIRE_GPU* ]] || die "refusal is not one line: $refusal"
  log "FNAC_REQUIRE_GPU=true without a GPU: $refusal"
fi
"$DOCKER" exec "$container" fnac doctor >"$workdir/doctor.txt" 2>&1 || true
log "fnac doctor in the image: $(tail -1 "$workdir/doctor.txt")"
log "image $IMAGE: ${image_mb} MB; total $((SECONDS - started)) s"
