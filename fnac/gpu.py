"""Is there an NVIDIA GPU, can this ONNX Runtime build use it, and if not, why not.

Three independent facts decide whether the CUDA provider can load: a GPU and its driver are visible, the
driver supports the CUDA major version this onnxruntime-gpu build was compiled for (1.19-1.26: CUDA 12,
1.27 and later: CUDA 13, which needs a driver of the 580 series or newer), and the CUDA libraries of that
major version (cudart, cuBLAS, cuDNN) can be found. Each fact is gathered by one small function here, and
`verdict` turns them into one line; `fnac doctor`, the service's start-up log and /readyz all say that line.
Everything runs without a GPU and without torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import asdict, dataclass, field

# Oldest driver branch that supports each CUDA major version (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER_FOR_CUDA = {11: 450, 12: 525, 13: 580}

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)


@dataclass(frozen=True)
class GpuInfo:
    """What the NVIDIA driver says (nothing when no driver answers)."""

    visible: bool = False
    driver_version: str | None = None  # e.g. "550.54.15"
    cuda_version: str | None = None  # the newest CUDA the driver supports, e.g. "12.4"
    gpus: list[dict] = field(default_factory=list)  # [{"index": 0, "name": ..., "memory_mib": ...}]
    source: str = "none"  # how it was found: nvidia-smi, libcuda, device node, none

    @property
    def driver_major(self) -> int | None:
        return _major(self.driver_version)

    @property
    def cuda_major(self) -> int | None:
        return _major(self.cuda_version)


@dataclass(frozen=True)
class OrtBuild:
    """Which onnxruntime is installed and which CUDA it was built for."""

    package: str  # onnxruntime, onnxruntime-gpu, ...
    version: str
    cuda_version: str | None  # e.g. "13.0"; None for CPU-only builds
    available: list[str] = field(default_factory=list)  # providers compiled in

    @property
    def cuda_major(self) -> int | None:
        return _major(self.cuda_version)


@dataclass(frozen=True)
class Verdict:
    """One line for people, plus the state machines act on."""

    status: str  # "gpu": a GPU provider runs; "cpu": no GPU to use; "degraded": a GPU is there but unused
    line: str

    @property
    def on_gpu(self) -> bool:
        return self.status == "gpu"


def _major(version: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", version or "")
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------- the driver


def parse_nvidia_smi(text: str) -> tuple[str | None, str | None]:
    """(driver version, driver CUDA version) from the banner of plain `nvidia-smi`."""
    driver = re.search(r"Driver Version:\s*([0-9.]+)", text)
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_gpu_query(text: str) -> list[dict]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for row in text.strip().splitlines():
        parts = [p.strip() for p in row.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            memory = int(parts[3]) if parts[3].isdigit() else None
            gpus.append({"index": int(parts[0]), "uuid": parts[1], "name": parts[2], "memory_mib": memory})
    return gpus


def _run(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def libcuda_driver_version() -> str | None:
    """The CUDA version the installed driver supports, from libcuda itself (cuDriverGetVersion)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


def detect_gpu() -> GpuInfo:
    """The NVIDIA GPUs this process may use, the driver version and the CUDA version it supports.

    nvidia-smi when it is installed (it also names the GPUs); otherwise libcuda's own answer. Devices hidden
    by CUDA_VISIBLE_DEVICES are left out, as ONNX Runtime numbers only the visible ones."""
    if shutil.which("nvidia-smi"):
        banner = _run(["nvidia-smi"])
        if banner is not None:
            driver, cuda = parse_nvidia_smi(banner)
            query = _run(
                ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
            )
            gpus = visible_devices(parse_gpu_query(query or ""), os.environ.get("CUDA_VISIBLE_DEVICES"))
            return GpuInfo(bool(gpus), driver, cuda, gpus, "nvidia-smi")
    cuda = libcuda_driver_version()
    if cuda is not None:
        devices = sorted(glob.glob("/dev/nvidia[0-9]*"))
        gpus = [{"index": i, "name": None, "memory_mib": None} for i in range(len(devices))]
        gpus = visible_devices(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return GpuInfo(bool(gpus), None, cuda, gpus, "libcuda")
    if os.path.exists("/dev/nvidia0"):
        # A device node without a usable driver library: a GPU, but nothing can run on it.
        return GpuInfo(True, None, None, [{"index": 0, "name": None, "memory_mib": None}], "device node")
    return GpuInfo()


def visible_devices(gpus: list[dict], cuda_visible_devices: str | None) -> list[dict]:
    """The GPUs CUDA_VISIBLE_DEVICES lets through (by index or UUID), in its order; ONNX Runtime's device_id
    counts these from 0."""
    if cuda_visible_devices is None:
        return gpus
    visible = []
    for item in (part.strip() for part in cuda_visible_devices.split(",")):
        match = [
            g for g in gpus if str(g["index"]) == item or (item and str(g.get("uuid", "")).startswith(item))
        ]
        if not item or len(match) != 1:
            break  # CUDA stops at the first entry it cannot resolve
        visible.append(match[0])
    return visible


# ---------------------------------------------------------------------------------------------- onnxruntime


def ort_build() -> OrtBuild:
    """The installed onnxruntime: distribution name, version, the CUDA it was built for, providers."""
    import onnxruntime as ort

    package, cuda = "onnxruntime", None
    try:
        from onnxruntime.capi import build_and_package_info as info

        package = getattr(info, "package_name", package)
        cuda = getattr(info, "cuda_version", None) or None
    except ImportError:
        pass
    available = list(ort.get_available_providers())
    if cuda is None and CUDA in available:
        cuda = f"{required_cuda_major(ort.__version__)}.x"
    return OrtBuild(package, ort.__version__, cuda, available)


def required_cuda_major(ort_version: str) -> int:
    """The CUDA major version onnxruntime-gpu's PyPI wheels are built for: 13 from 1.27 on, 12 before."""
    parts = [int(p) for p in re.findall(r"\d+", ort_version)[:2]] + [0, 0]
    return 13 if (parts[0], parts[1]) >= (1, 27) else 12


def cuda_library_names(cuda_major: int) -> dict[str, str]:
    """Sonames the CUDA provider (and TensorRT) open for a build of this CUDA major version."""
    return {
        "driver": "libcuda.so.1",
        "cudart": f"libcudart.so.{cuda_major}",
        "cublasLt": f"libcublasLt.so.{cuda_major}",
        "cublas": f"libcublas.so.{cuda_major}",
        "curand": "libcurand.so.10",
        "cudnn": "libcudnn.so.9",
        "tensorrt": "libnvinfer.so.10",
    }


OPTIONAL_LIBRARIES = ("tensorrt",)  # the CUDA provider runs without it


def nvidia_wheel_dirs() -> list[str]:
    """lib folders of the nvidia-* wheels (PyPI's CUDA runtime, e.g. from torch or onnxruntime-gpu[cuda]) on
    sys.path."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}
    found = []
    for root in sorted(r for r in roots if r and os.path.isdir(os.path.join(r, "nvidia"))):
        found.extend(sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib"))))
    return found


def find_library(soname: str, search_dirs: list[str] | None = None) -> dict | None:
    """Where `soname` would come from: {"path", "via"} with via "loaded" (already in this process), "loader
    path" (dlopen finds it; harmless for these libraries without a GPU) or "nvidia wheel" (on disk, but ORT
    will not find it unless it is preloaded: preload_cuda_libraries); None when nowhere."""
    loaded = _loaded_library(soname)
    if loaded:
        return {"path": loaded, "via": "loaded"}
    try:
        ctypes.CDLL(soname)
    except OSError:
        pass
    else:
        return {"path": _loaded_library(soname) or soname, "via": "loader path"}
    for directory in nvidia_wheel_dirs() if search_dirs is None else search_dirs:
        candidate = os.path.join(directory, soname)
        if os.path.isfile(candidate):
            return {"path": candidate, "via": "nvidia wheel"}
    return None


def _loaded_library(soname: str) -> str | None:
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if os.path.basename(path) == soname:
                    return path
    except OSError:
        pass
    return None


def cuda_libraries(build: OrtBuild) -> dict[str, dict | None]:
    """{component: {"path", "via"} or None} for the CUDA major version `build` needs ({} for a CPU build)."""
    if build.cuda_major is None:
        return {}
    return {name: find_library(soname) for name, soname in cuda_library_names(build.cuda_major).items()}


def preload_cuda_libraries(build: OrtBuild) -> list[str]:
    """Load the CUDA runtime, cuBLAS and cuDNN of `build`'s CUDA version from nvidia-* wheels on sys.path
    (RTLD_GLOBAL), so ORT's CUDA provider finds them by soname without LD_LIBRARY_PATH: that is how PyTorch's
    CUDA libraries serve ORT on a machine that has both. Like onnxruntime.preload_dlls(), but it also searches
    every sys.path entry, so an onnxruntime installed into a separate target folder finds them. Returns the
    paths it loaded (nothing when the libraries are already loadable or absent)."""
    if build.cuda_major is None:
        return []
    names = cuda_library_names(build.cuda_major)
    loaded = []
    for key in ("cublasLt", "cublas", "curand", "cudart", "cudnn"):  # dependencies first
        found = find_library(names[key])
        if found and found["via"] == "nvidia wheel":
            try:
                ctypes.CDLL(found["path"], mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            loaded.append(found["path"])
    return loaded


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: varint (wire type 0) for ints, length-delimited (wire type 2) for bytes."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def tiny_model() -> bytes:
    """A serialized one-node ONNX model (y = Relu(x), x float [1, 4]), written without the onnx package
    (absent where only the service is installed), to see which providers a session really gets."""

    def value_info(name: str) -> bytes:
        dims = _field(1, _field(1, 1)) + _field(1, _field(1, 4))  # shape [1, 4]
        tensor = _field(1, 1) + _field(2, dims)  # elem_type FLOAT, shape
        return _field(1, name.encode()) + _field(2, _field(1, tensor))

    node = _field(1, b"x") + _field(2, b"y") + _field(3, b"relu") + _field(4, b"Relu")
    graph = _field(1, node) + _field(2, b"probe") + _field(11, value_info("x")) + _field(12, value_info("y"))
    opset = _field(1, b"") + _field(2, 17)
    return _field(1, 8) + _field(2, b"fnac-doctor") + _field(7, graph) + _field(8, opset)


def probe_providers(providers: list) -> tuple[list[str], str | None]:
    """Create a tiny session with `providers` (names or (name, options) pairs) and run it once: the providers
    that really loaded, and the error if the session could not be made at all."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # the caller reports what failed; ORT's own fallback error is noise here
    try:
        # No silent retry on the CPU (ORT's default prints to stdout and retries): a failure is the answer.
        session = ort.InferenceSession(tiny_model(), options, providers=providers, enable_fallback=0)
        session.run(None, {"x": np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32)})
    except Exception as exc:  # ORT raises its own exception types
        return [], str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return list(session.get_providers()), None


def loaded_providers(build: OrtBuild) -> dict[str, bool]:
    """{provider: loads?} for every provider the build offers, one tiny session each (each with the CPU
    provider behind it, as ORT needs)."""
    result = {}
    for provider in build.available:
        chain = [provider] if provider == CPU else [provider, CPU]
        loaded, _ = probe_providers(chain)
        result[provider] = provider in loaded
    return result


# ---------------------------------------------------------------------------------------------- verdict


def verdict(
    gpu: GpuInfo, build: OrtBuild, loaded: list[str], libraries: dict[str, str | None] | None = None
) -> Verdict:
    """One line on whether the GPU is used, and the most likely reason when it is not.

    `loaded` are the providers that really loaded (session.get_providers()), not the ones asked for."""
    libraries = libraries or {}
    gpu_loaded = [p for p in loaded if p in GPU_PROVIDERS]
    name = next((g["name"] for g in gpu.gpus if g.get("name")), None) or "an NVIDIA GPU"
    driver = f"driver {gpu.driver_version}" if gpu.driver_version else "the driver"
    if gpu_loaded:
        where = f"{name} ({driver}, CUDA {gpu.cuda_version or '?'})"
        return Verdict("gpu", f"GPU in use: {gpu_loaded[0]} loads on {where}")
    if not gpu.visible:
        if any(p in build.available for p in GPU_PROVIDERS):
            return Verdict(
                "cpu", f"CPU only: no NVIDIA GPU visible; {build.package} {build.version} runs on {CPU}"
            )
        return Verdict(
            "cpu", f"CPU only: no NVIDIA GPU visible; {build.package} {build.version} is a CPU build"
        )
    if CUDA not in build.available:
        return Verdict(
            "degraded",
            f"GPU present but {build.package} {build.version} has no CUDA provider: install onnxruntime-gpu "
            f"({_wheel_advice(gpu)})",
        )
    needed = build.cuda_major
    if gpu.cuda_major is not None and needed is not None and gpu.cuda_major < needed:
        driver_text = f"{driver} supports CUDA {gpu.cuda_version}"
        return Verdict(
            "degraded",
            f"GPU present but the CUDA provider cannot load: {driver_text}, this {build.package} "
            f"{build.version} needs CUDA {needed} (driver {MIN_DRIVER_FOR_CUDA.get(needed, '?')}+); "
            f"upgrade the driver or use {_wheel_advice(gpu)}",
        )
    needed_names = {k: v for k, v in cuda_library_names(needed or 12).items() if k not in OPTIONAL_LIBRARIES}
    missing = [soname for key, soname in needed_names.items() if libraries and not libraries.get(key)]
    if missing:
        return Verdict(
            "degraded",
            f"GPU present but the CUDA provider cannot load: {', '.join(missing)} not found (install "
            f"onnxruntime-gpu[cuda,cudnn], or the nvidia-* CUDA {needed} wheels)",
        )
    unloaded = [
        needed_names[k] for k in needed_names if (libraries.get(k) or {}).get("via") == "nvidia wheel"
    ]
    if unloaded and CUDA not in loaded:
        return Verdict(
            "degraded",
            f"GPU present but the CUDA provider cannot load: {', '.join(unloaded)} are in nvidia-* wheels but "
            "not on the loader path (preload them: fnac.gpu.preload_cuda_libraries() or "
            "onnxruntime.preload_dlls(); or add their lib folders to LD_LIBRARY_PATH)",
        )
    if CUDA not in loaded and loaded:
        return Verdict(
            "degraded",
            f"GPU present but not used: providers {loaded} loaded (the CUDA provider was not asked for or "
            "failed to load; see the onnxruntime error above)",
        )
    return Verdict(
        "degraded", "GPU present but the CUDA provider did not load (see the onnxruntime error above)"
    )


def _wheel_advice(gpu: GpuInfo) -> str:
    """Which onnxruntime-gpu fits this driver."""
    if gpu.cuda_major is not None and gpu.cuda_major < 13:
        return "onnxruntime-gpu<1.27 (CUDA 12 wheels; the image's CUDA_MAJOR=12)"
    return "onnxruntime-gpu>=1.27 (CUDA 13 wheels)"


def as_dict(gpu: GpuInfo) -> dict:
    return {**asdict(gpu), "driver_major": gpu.driver_major}


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class GpuOptions:
    """Settings for the GPU providers (FNAC_CUDA_DEVICE, FNAC_GPU_MEM_LIMIT_MB, ...)."""

    device_id: int = 0
    mem_limit_mb: int = 0  # 0: no cap
    arena_extend: str = "next_power_of_two"  # or "same_as_requested"
    trt_cache_dir: str | None = None


def provider_options(chosen: list[str], options: GpuOptions, gpu: GpuInfo | None = None) -> list:
    """The providers argument for ort.InferenceSession: CUDA and TensorRT get their options, others stay names.

    The device id counts the GPUs this process sees (after CUDA_VISIBLE_DEVICES); a device that is not there is
    a configuration error, reported here rather than as ORT's later, vaguer failure."""
    wants_gpu = gpu is not None and gpu.visible and any(p in GPU_PROVIDERS for p in chosen)
    if wants_gpu and options.device_id >= len(gpu.gpus):
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        restriction = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
        raise ValueError(
            f"FNAC_CUDA_DEVICE={options.device_id} but only {len(gpu.gpus)} GPU(s) are visible{restriction}"
        )
    result: list = []
    for provider in chosen:
        if provider == CUDA:
            cuda = {
                "device_id": str(options.device_id),
                "arena_extend_strategy": "kSameAsRequested"
                if options.arena_extend == "same_as_requested"
                else "kNextPowerOfTwo",
            }
            if options.mem_limit_mb:
                cuda["gpu_mem_limit"] = str(options.mem_limit_mb * 2**20)
            result.append((provider, cuda))
        elif provider == TENSORRT:
            trt = {"device_id": str(options.device_id)}
            if options.trt_cache_dir:
                os.makedirs(options.trt_cache_dir, exist_ok=True)
                trt.update(
                    {
                        "trt_engine_cache_enable": "True",
                        "trt_engine_cache_path": str(options.trt_cache_dir),
                        "trt_timing_cache_enable": "True",
                        "trt_timing_cache_path": str(options.trt_cache_dir),
                    }
                )
            result.append((provider, trt))
        else:
            result.append(provider)
    return result


def tensorrt_installed() -> bool:
    """TensorRT's runtime library can be opened (otherwise ORT logs an error for every session)."""
    return find_library("libnvinfer.so.10") is not None or bool(ctypes.util.find_library("nvinfer"))
