#!/usr/bin/env bash
# The GPU serving path, checked start to end without a person and without network (docs/BENCHMARKS.md):
# install a brought onnxruntime-gpu wheel next to a machine's PyTorch (CUDA 13) and its nvidia-* libraries,
# then `fnac doctor`, `fnac bench model` on the CUDA provider (paper network; fp32 and fp16; batch 1, 8, 64;
# plain run and IO binding) and `fnac bench service` against a server that must run on the GPU
# (FNAC_REQUIRE_GPU=true). Every step writes JSON into OUTDIR; summary.json says which steps passed.
#
#   scripts/gpu_check.sh [OUTDIR]                                  (default runs/gpu_check)
#
# Environment (all optional):
#   PYTHON       interpreter with torch, numpy, onnx (default python3)
#   ORT_WHEEL    the onnxruntime-gpu wheel (default: the newest wheels/onnxruntime_gpu-*.whl; a wheel stored
#                as numbered pieces NAME.whl.part-* is joined first)
#   WHEELHOUSE   wheels for serving packages the machine lacks (fastapi, uvicorn, av, ...), installed with
#                --no-deps, only when an import fails (default wheels/)
#   SKIP_WHEEL=1 keep the onnxruntime that is installed (a rehearsal where the wheel is not at hand)
#   ALLOW_CPU=1  carry on when the CUDA provider does not load, benchmarking the CPU instead (a rehearsal on a
#                machine without a GPU: every step still runs)
#   QUICK=1      shorter measurements (rehearsal)
#   SERVICE_CONCURRENCY  client concurrencies for the service benchmark (default 8,64,128)
#   SITE         folder for the installed wheels (default /tmp/fnac-gpu-check-site)
#   STEP_TIMEOUT seconds allowed to each benchmark step (default 300, the whole check stays under 10 min;
#                QUICK=1: 1800)
#
# The wheels can be fetched on a machine with network:  scripts/gpu_check.sh --download [WHEELDIR]
set -u
cd "$(dirname "$0")/.."
REPO="$PWD"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

ORT_VERSION="${ORT_VERSION:-1.31.1}"
# Serving packages the GPU machines' image lacks (it has numpy, torch, onnx, httpx, pillow, psutil, scipy, ...).
SERVE_WHEELS="fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv uvicorn python-multipart av \
annotated-types typing-inspection annotated-doc"
if [[ "${1:-}" == --download ]]; then
  dir="${2:-wheels}"
  mkdir -p "$dir"
  # shellcheck disable=SC2086
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "onnxruntime-gpu==$ORT_VERSION" $SERVE_WHEELS || exit 1
  # Pieces of at most 48 MiB, for transfers that cap the size of one copy; joined again by this script.
  for wheel in "$dir"/onnxruntime_gpu-*.whl; do
    split -b 48M -d -a 2 "$wheel" "$wheel.part-" && rm "$wheel"
  done
  ls -l "$dir"
  exit 0
fi

OUT="${1:-runs/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SITE="${SITE:-${TMPDIR:-/tmp}/fnac-gpu-check-site}"  # installed packages: kept out of OUTDIR (hundreds of MB)
T0=$(date +%s)
say() { echo "[gpu_check $(($(date +%s) - T0))s] $*"; }
declare -A STEP
step_done() { STEP[$1]=$2; say "$1: $2"; }
QUICK="${QUICK:-0}"
ALLOW_CPU="${ALLOW_CPU:-0}"
# A rehearsal on a small shared CPU exports the paper network slowly: give it longer.
STEP_TIMEOUT="${STEP_TIMEOUT:-$([[ "$QUICK" == 1 ]] && echo 1800 || echo 300)}"

# ---------------------------------------------------------------------------------------------- machine
{ nvidia-smi 2>&1 || echo "nvidia-smi: not available"; } >"$OUT/nvidia-smi.txt"
lscpu >"$OUT/lscpu.txt" 2>&1 || true
say "python: $("$PY" --version 2>&1); GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"

# ---------------------------------------------------------------------------------------------- install
pythonpath="$REPO"
if [[ "${SKIP_WHEEL:-0}" != 1 ]]; then
  wheel="${ORT_WHEEL:-}"
  if [[ -z "$wheel" ]]; then
    for part in wheels/onnxruntime_gpu-*.whl.part-00; do
      [[ -f "$part" ]] || continue
      joined="$SITE/wheels/$(basename "${part%.part-00}")"
      mkdir -p "$SITE/wheels"
      cat "${part%-00}"-* >"$joined"
      say "joined $(ls "${part%-00}"-* | wc -l) pieces into $joined"
    done
    wheel="$(ls -t "$SITE"/wheels/onnxruntime_gpu-*.whl wheels/onnxruntime_gpu-*.whl 2>/dev/null | head -1)"
  fi
  if [[ -z "$wheel" || ! -f "$wheel" ]]; then
    step_done install "FAIL: no onnxruntime-gpu wheel (set ORT_WHEEL or put it in wheels/)"
    echo '{"install": "no wheel"}' >"$OUT/summary.json"
    exit 1
  fi
  # Its own folder, first on PYTHONPATH: the machine's onnxruntime (CPU build) stays installed and untouched.
  rm -rf "$SITE/ort"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE/ort" "$wheel" >"$OUT/install.log" 2>&1; then
    step_done install "ok ($(basename "$wheel"))"
  else
    step_done install "FAIL (see install.log)"
  fi
  # onnxruntime.preload_dlls() looks for nvidia/<package>/lib beside the onnxruntime package: point it at
  # the CUDA libraries PyTorch's nvidia-* packages installed.
  nvidia_root="$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)"
  if [[ -n "$nvidia_root" && ! -e "$SITE/ort/nvidia" ]]; then
    ln -s "$nvidia_root/nvidia" "$SITE/ort/nvidia"
  fi
  pythonpath="$SITE/ort:$pythonpath"
fi
# Serving packages missing here come from the wheelhouse (no network), into a folder of their own.
missing="$(PYTHONPATH="$pythonpath" "$PY" - <<'EOF'
import importlib.util
need = {"fastapi": "fastapi", "uvicorn": "uvicorn", "pydantic_settings": "pydantic-settings",
        "multipart": "python-multipart", "av": "av", "httpx": "httpx", "PIL": "pillow", "psutil": "psutil",
        "prometheus_client": "prometheus-client"}
print(" ".join(sorted({dist for module, dist in need.items() if importlib.util.find_spec(module) is None})))
EOF
)"
if [[ -n "$missing" ]]; then
  wheelhouse="${WHEELHOUSE:-wheels}"
  say "missing here: $missing; installing from $wheelhouse"
  wheels=()
  for w in "$wheelhouse"/*.whl; do [[ -f "$w" && "$(basename "$w")" != onnxruntime* ]] && wheels+=("$w"); done
  if ((${#wheels[@]})) && "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE/deps" "${wheels[@]}" >>"$OUT/install.log" 2>&1; then
    pythonpath="$pythonpath:$SITE/deps"
  else
    say "could not install the serving packages (see install.log)"
  fi
fi
export PYTHONPATH="$pythonpath"
FNAC=("$PY" -m fnac)

# ---------------------------------------------------------------------------------------------- preload
"$PY" - "$OUT/preload.json" <<'EOF'
import contextlib, io, json, sys
import onnxruntime as ort
from fnac import gpu
out = io.StringIO()
with contextlib.redirect_stdout(out):
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # the CUDA 13 libraries PyTorch's packages installed, via the nvidia link
build = gpu.ort_build()
report = {"onnxruntime": ort.__version__, "file": ort.__file__, "build": build.__dict__,
          "preload_dlls_output": out.getvalue(), "libraries": gpu.cuda_libraries(build),
          "cuda_probe": gpu.probe_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])}
json.dump(report, open(sys.argv[1], "w"), indent=2, default=str)
print(f"onnxruntime {ort.__version__} from {ort.__file__}; CUDA probe: {report['cuda_probe']}")
EOF
rc=$?; step_done preload "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc $rc")"

# ---------------------------------------------------------------------------------------------- doctor
"${FNAC[@]}" doctor --json >"$OUT/doctor.json" 2>"$OUT/doctor.log"
rc=$?
status="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$OUT/doctor.json" 2>/dev/null || echo unknown)"
say "doctor: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "$OUT/doctor.json" 2>/dev/null)"
if [[ "$status" == gpu ]]; then
  step_done doctor ok
  provider=cuda
elif [[ "$ALLOW_CPU" == 1 ]]; then
  step_done doctor "no GPU in use (status $status, rc $rc); ALLOW_CPU=1: benchmarking the CPU"
  provider=cpu
else
  step_done doctor "FAIL: status $status (rc $rc), see doctor.json"
  provider=none
fi

# ---------------------------------------------------------------------------------------------- model
if [[ "$provider" != none ]]; then
  if [[ "$QUICK" == 1 ]]; then repeats=3; batches=1,8; else repeats=20; batches=1,8,64; fi
  precisions=fp32,fp16
  extra=()
  [[ "$provider" == cpu ]] && extra=(--no-eager)
  timeout "$STEP_TIMEOUT" "${FNAC[@]}" bench model --provider "$provider" --batches "$batches" --precisions "$precisions" \
    --repeats "$repeats" "${extra[@]}" --json "$OUT/bench_model_$provider.json" >"$OUT/bench_model.log" 2>&1
  rc=$?
  tail -n 16 "$OUT/bench_model.log"
  step_done bench_model "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc $rc (bench_model.log)")"
fi

# ---------------------------------------------------------------------------------------------- service
if [[ "$provider" != none ]]; then
  if [[ "$QUICK" == 1 ]]; then duration=3; concurrency=8; else duration=10; concurrency="${SERVICE_CONCURRENCY:-8,64,128}"; fi
  cores="$(nproc)"
  workers=$((cores > 4 ? cores - 2 : 2))
  require=$([[ "$provider" == cuda ]] && echo true || echo false)
  FNAC_REQUIRE_GPU="$require" FNAC_MAX_BATCH="${FNAC_MAX_BATCH:-32}" FNAC_DECODE_WORKERS="${FNAC_DECODE_WORKERS:-$workers}" \
    timeout "$STEP_TIMEOUT" "${FNAC[@]}" bench service --duration "$duration" --concurrency "$concurrency" \
    --json "$OUT/bench_service_$provider.json" >"$OUT/bench_service.log" 2>&1
  rc=$?
  tail -n 20 "$OUT/bench_service.log"
  step_done bench_service "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc $rc (bench_service.log)")"
fi

# ---------------------------------------------------------------------------------------------- summary
steps_json="{"
for key in "${!STEP[@]}"; do steps_json+="\"$key\": \"${STEP[$key]//\"/\'}\", "; done
steps_json="${steps_json%, }}"
"$PY" - "$OUT" "$provider" "$steps_json" <<'EOF'
import json, pathlib, sys
out, provider, steps = pathlib.Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
summary = {"provider": provider, "steps": steps}
for name in ("doctor", f"bench_model_{provider}", f"bench_service_{provider}", "preload"):
    path = out / f"{name}.json"
    if path.is_file():
        summary[name] = json.loads(path.read_text())
(out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
rows = summary.get(f"bench_model_{provider}", {}).get("rows", [])
for row in rows:
    if row["batch"] == max(r["batch"] for r in rows):
        print(f"  model batch {row['batch']:>3} {row['runner']:<24} {row['samples_per_s']:9.1f} pairs/s")
service = summary.get(f"bench_service_{provider}", {})
for level in service.get("levels", []):
    print(f"  service c={level['concurrency']:<4} batching {level['batching']:<3} {level['req_per_s']:8.1f} req/s")
if service:
    print(f"  server providers (read back from its session): {service.get('server_providers')}")
EOF
failed=0
for key in "${!STEP[@]}"; do [[ "${STEP[$key]}" == ok* || "${STEP[$key]}" == "no GPU in use"* ]] || failed=1; done
say "done: $OUT/summary.json $([[ $failed == 0 ]] && echo PASS || echo FAIL)"
exit $failed
