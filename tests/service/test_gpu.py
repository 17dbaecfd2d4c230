"""GPU detection, the verdict line, provider selection and options: fed fake drivers, builds and sessions."""

import json
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from fnac import gpu, runtime
from fnac.gpu import GpuInfo, GpuOptions, OrtBuild
from fnac.runtime import ModelError, ModelRuntime

SMI_550 = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""
SMI_580 = "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0 |"
QUERY = "0, GPU-1111aaaa-0000, NVIDIA H200, 143771\n1, GPU-2222bbbb-0000, NVIDIA H200, 143771\n"

GPU_BUILD_13 = OrtBuild(
    "onnxruntime-gpu", "1.27.0", "13.0", ["CUDAExecutionProvider", "CPUExecutionProvider"]
)
GPU_BUILD_12 = OrtBuild(
    "onnxruntime-gpu", "1.20.1", "12.2", ["CUDAExecutionProvider", "CPUExecutionProvider"]
)
CPU_BUILD = OrtBuild("onnxruntime", "1.27.0", None, ["CPUExecutionProvider"])
H200 = [{"index": 0, "uuid": "GPU-1111", "name": "NVIDIA H200", "memory_mib": 143771}]
ALL_LIBS_13 = {name: {"path": f"/x/{so}", "via": "loaded"} for name, so in gpu.cuda_library_names(13).items()}


def test_nvidia_smi_banner_and_query_are_parsed():
    assert gpu.parse_nvidia_smi(SMI_550) == ("550.54.15", "12.4")
    assert gpu.parse_nvidia_smi("garbage") == (None, None)
    gpus = gpu.parse_gpu_query(QUERY)
    assert [g["index"] for g in gpus] == [0, 1] and gpus[1]["name"] == "NVIDIA H200"
    assert gpus[0]["memory_mib"] == 143771


@pytest.mark.parametrize(
    ("variable", "expected"),
    [(None, [0, 1]), ("1", [1]), ("1,0", [1, 0]), ("", []), ("-1", []), ("0,7,1", [0]), ("GPU-2222", [1])],
)
def test_cuda_visible_devices_restricts_and_reorders(variable, expected):
    visible = gpu.visible_devices(gpu.parse_gpu_query(QUERY), variable)
    assert [g["index"] for g in visible] == expected


def test_detect_gpu_reads_nvidia_smi(monkeypatch):
    outputs = {"nvidia-smi": SMI_550, "--query-gpu": QUERY}
    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu, "_run", lambda cmd: outputs["--query-gpu" if len(cmd) > 1 else "nvidia-smi"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    info = gpu.detect_gpu()
    assert info.visible and info.source == "nvidia-smi"
    assert (info.driver_version, info.cuda_version, info.driver_major, info.cuda_major) == (
        "550.54.15",
        "12.4",
        550,
        12,
    )
    assert [g["index"] for g in info.gpus] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not gpu.detect_gpu().visible  # all hidden: nothing to run on


def test_detect_gpu_without_a_driver(monkeypatch):
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    monkeypatch.setattr(gpu, "libcuda_driver_version", lambda: None)
    monkeypatch.setattr(gpu.os.path, "exists", lambda path: False)
    assert gpu.detect_gpu() == GpuInfo()


@pytest.mark.parametrize(
    ("version", "major"), [("1.19.2", 12), ("1.26.0", 12), ("1.27.0", 13), ("1.31.1", 13)]
)
def test_cuda_major_of_onnxruntime_gpu_releases(version, major):
    assert gpu.required_cuda_major(version) == major


def test_verdict_cpu_machine():
    line = gpu.verdict(GpuInfo(), GPU_BUILD_13, ["CPUExecutionProvider"])
    assert line.status == "cpu" and not line.on_gpu
    assert line.line.startswith("CPU only: no NVIDIA GPU visible")
    assert gpu.verdict(GpuInfo(), CPU_BUILD, ["CPUExecutionProvider"]).line.endswith("is a CPU build")


def test_verdict_old_driver_new_onnxruntime():
    old = GpuInfo(True, "550.54.15", "12.4", H200, "nvidia-smi")
    result = gpu.verdict(old, GPU_BUILD_13, ["CPUExecutionProvider"], ALL_LIBS_13)
    assert result.status == "degraded"
    assert "GPU present but the CUDA provider cannot load: driver 550.54.15 supports CUDA 12.4" in result.line
    assert "onnxruntime-gpu 1.27.0 needs CUDA 13 (driver 580+)" in result.line
    assert "onnxruntime-gpu<1.27" in result.line  # the advice fits the driver
    # The same driver with a CUDA 12 build is not blamed on the driver.
    libs_12 = {name: {"path": "/x", "via": "loader path"} for name in gpu.cuda_library_names(12)}
    fine = gpu.verdict(old, GPU_BUILD_12, ["CUDAExecutionProvider", "CPUExecutionProvider"], libs_12)
    assert (
        fine.status == "gpu"
        and "CUDAExecutionProvider loads on NVIDIA H200 (driver 550.54.15, CUDA 12.4)" in fine.line
    )


def test_verdict_missing_libraries_and_cpu_builds():
    new = GpuInfo(True, "580.65.06", "13.0", H200, "nvidia-smi")
    libs = {**ALL_LIBS_13, "cublasLt": None, "tensorrt": None}  # TensorRT is optional
    result = gpu.verdict(new, GPU_BUILD_13, ["CPUExecutionProvider"], libs)
    assert result.status == "degraded" and "libcublasLt.so.13 not found" in result.line
    assert "libnvinfer" not in result.line
    result = gpu.verdict(new, CPU_BUILD, ["CPUExecutionProvider"])
    assert result.status == "degraded" and "has no CUDA provider: install onnxruntime-gpu" in result.line
    assert "onnxruntime-gpu>=1.27" in result.line
    in_wheels = {
        **ALL_LIBS_13,
        "cudnn": {"path": "/site/nvidia/cudnn/lib/libcudnn.so.9", "via": "nvidia wheel"},
    }
    result = gpu.verdict(new, GPU_BUILD_13, ["CPUExecutionProvider"], in_wheels)
    assert "libcudnn.so.9 are in nvidia-* wheels but not on the loader path" in result.line
    result = gpu.verdict(new, GPU_BUILD_13, ["CPUExecutionProvider"], ALL_LIBS_13)
    assert result.status == "degraded" and "not used" in result.line


def test_cuda_libraries_in_nvidia_wheels_are_found_and_preloaded(tmp_path, monkeypatch):
    # A fake site-packages with the CUDA 13 wheel layout; the "library" is a real shared object (libm) copy.
    import shutil

    lib = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    shutil.copy(gpu._loaded_library("libm.so.6"), lib / "libfnac-test-curand.so.10")  # a real shared object
    monkeypatch.setattr(gpu.sys, "path", [str(tmp_path / "site")])
    # Names no library in this process has (torch, when imported, has loaded the real CUDA ones).
    fake = {key: f"libfnac-test-{key}.so.10" for key in gpu.cuda_library_names(13)}
    monkeypatch.setattr(gpu, "cuda_library_names", lambda major: fake)
    found = gpu.find_library("libfnac-test-curand.so.10")
    assert found == {"path": str(lib / "libfnac-test-curand.so.10"), "via": "nvidia wheel"}
    assert gpu.find_library("libnot-there.so.1") is None
    loaded = gpu.preload_cuda_libraries(GPU_BUILD_13)
    assert loaded == [str(lib / "libfnac-test-curand.so.10")]  # the others are nowhere: skipped
    assert gpu.find_library("libfnac-test-curand.so.10")["via"] == "loaded"


def test_provider_choice_follows_the_detected_gpu(monkeypatch):
    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: offered)
    monkeypatch.setattr(gpu, "detect_gpu", lambda: GpuInfo(True, "580.65.06", "13.0", H200, "nvidia-smi"))
    monkeypatch.setattr(gpu, "tensorrt_installed", lambda: False)
    assert runtime.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(gpu, "tensorrt_installed", lambda: True)
    assert runtime.choose_providers()[0] == "TensorrtExecutionProvider"
    monkeypatch.setattr(gpu, "detect_gpu", lambda: GpuInfo())
    assert runtime.choose_providers() == ["CPUExecutionProvider"]


def test_provider_options_plumbing(tmp_path):
    two = GpuInfo(True, "580.65.06", "13.0", [*H200, {**H200[0], "index": 1}], "nvidia-smi")
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    options = GpuOptions(
        device_id=1, mem_limit_mb=512, arena_extend="same_as_requested", trt_cache_dir=str(tmp_path / "trt")
    )
    trt, cuda, cpu = gpu.provider_options(chain, options, two)
    assert cpu == "CPUExecutionProvider"
    assert cuda == (
        "CUDAExecutionProvider",
        {"device_id": "1", "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(512 * 2**20)},
    )
    assert trt[1]["trt_engine_cache_enable"] == "True" and trt[1]["trt_engine_cache_path"] == str(
        tmp_path / "trt"
    )
    assert (tmp_path / "trt").is_dir()
    _, (_, defaults), _ = gpu.provider_options(chain, GpuOptions(), two)
    assert defaults == {"device_id": "0", "arena_extend_strategy": "kNextPowerOfTwo"}  # no cap by default
    with pytest.raises(ValueError, match=r"FNAC_CUDA_DEVICE=2 but only 2 GPU\(s\) are visible"):
        gpu.provider_options(chain, GpuOptions(device_id=2), two)
    assert gpu.provider_options(["CPUExecutionProvider"], GpuOptions(device_id=5), GpuInfo()) == [
        "CPUExecutionProvider"
    ]


def test_tiny_probe_model_is_valid_onnx_and_runs_on_cpu():
    import onnx

    model = onnx.load_from_string(gpu.tiny_model())
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Relu"]
    assert gpu.probe_providers(["CPUExecutionProvider"]) == (["CPUExecutionProvider"], None)
    loaded, error = gpu.probe_providers(["NoSuchExecutionProvider"])
    assert loaded == [] and error


class FakeBinding:
    def __init__(self, session):
        self.session, self.inputs, self.outputs = session, {}, []

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = value

    def bind_output(self, name, device):
        self.outputs.append((name, device))

    def copy_outputs_to_cpu(self):
        feeds = {name: value.array for name, value in self.inputs.items()}
        return self.session.real.run([name for name, _ in self.outputs], feeds)


class FakeOrtValue:
    made: ClassVar[list] = []

    def __init__(self, array, device, device_id):
        self.array, self.device, self.device_id = array, device, device_id

    @classmethod
    def ortvalue_from_numpy(cls, array, device, device_id):
        cls.made.append((device, device_id))
        return cls(array, device, device_id)


def test_runtime_passes_gpu_options_and_binds_io_on_the_gpu(monkeypatch, toy_onnx_model):
    real_session = runtime.ort.InferenceSession
    created = {}

    class FakeGpuSession:
        """A CPU session that reports the CUDA provider as loaded, recording how it was made."""

        def __init__(self, path, options, providers):
            created["providers"] = providers
            self.real = real_session(path, options, providers=["CPUExecutionProvider"])
            self.bindings = []

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def io_binding(self):
            self.bindings.append(FakeBinding(self))
            return self.bindings[-1]

        def run_with_iobinding(self, binding):
            assert binding.inputs and binding.outputs

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(gpu, "detect_gpu", lambda: GpuInfo(True, "580.65.06", "13.0", H200 * 2, "nvidia-smi"))
    monkeypatch.setattr(runtime.ort, "InferenceSession", FakeGpuSession)
    monkeypatch.setattr(runtime.ort, "OrtValue", FakeOrtValue)
    monkeypatch.setattr(gpu, "preload_cuda_libraries", lambda build: [])  # keep CUDA out of the test process
    model = ModelRuntime(toy_onnx_model, gpu_options=GpuOptions(device_id=1, mem_limit_mb=64))
    cuda_name, cuda_options = created["providers"][0]
    assert cuda_name == "CUDAExecutionProvider" and cuda_options["device_id"] == "1"
    assert cuda_options["gpu_mem_limit"] == str(64 * 2**20)
    assert model.on_gpu
    images = np.random.default_rng(0).integers(0, 255, (2, 28, 28, 3), dtype=np.uint8)
    audio = np.zeros((2, 48000), np.float32)
    heatmap, score = model.run(images, audio)
    assert heatmap.shape == (2, 7, 7) and score.shape == (2,)
    assert FakeOrtValue.made[-2:] == [("cuda", 1), ("cuda", 1)]  # inputs copied to the chosen GPU once
    assert model.session.bindings[-1].outputs == [("heatmap", "cpu"), ("score", "cpu")]
    with pytest.raises(ModelError, match="FNAC_CUDA_DEVICE=3"):
        ModelRuntime(toy_onnx_model, gpu_options=GpuOptions(device_id=3))


def test_io_binding_on_the_cpu_gives_the_same_answers(toy_onnx_model):
    plain, bound = ModelRuntime(toy_onnx_model), ModelRuntime(toy_onnx_model, io_binding="on")
    assert plain._bind_device is None and bound._bind_device == ("cpu", 0)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((3, 48000))).astype(np.float32)
    for a, b in zip(plain.run(images, audio), bound.run(images, audio), strict=True):
        np.testing.assert_array_equal(a, b)


def test_doctor_json_on_this_machine_without_torch():
    # The serving install has no torch: block it, as if absent, and run the real command.
    code = (
        "import sys; sys.modules['torch'] = None; from fnac.cli import main; "
        "rc = main(['doctor', '--json']); assert 'torch' not in [m for m, v in sys.modules.items() if v]; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if report["gpu"]["visible"]:
        pytest.skip("an NVIDIA GPU is visible: this test describes a CPU-only machine")
    assert report["providers"]["loaded"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in report["providers"]["available"]
    assert report["gpu"]["visible"] is False and report["status"] == "cpu"
    assert report["verdict"].startswith("CPU only: no NVIDIA GPU visible")
    assert report["packages"]["fnac"] and report["onnxruntime"]["version"]
    assert report["model"]["image_size"] > 0 and "error" not in report["model"]
    from fnac.render import painter

    assert report["overlay_painter"].startswith("compiled" if painter._blend is not None else "numpy")


def test_require_gpu_refuses_to_start_here_in_one_line(toy_onnx_model):
    env = {
        "FNAC_MODEL": str(toy_onnx_model),
        "FNAC_REQUIRE_GPU": "true",
        "FNAC_PORT": "0",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "fnac", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "fnac serve: error: FNAC_REQUIRE_GPU is set, refusing to serve on the CPU: CPU only"
    )


@pytest.mark.anyio
async def test_require_gpu_also_holds_for_the_app_itself(toy_onnx_model):
    from tests.service.conftest import serve_app

    with pytest.raises(
        ModelError, match="FNAC_REQUIRE_GPU is set and no GPU provider runs the model: CPU only"
    ):
        async with serve_app(toy_onnx_model, require_gpu=True):
            pass


@pytest.mark.anyio
async def test_readyz_shows_the_verdict(live):
    body = (await live.client.get("/readyz")).json()
    assert body["runtime_status"] == "cpu" and body["runtime"].startswith("CPU only: no NVIDIA GPU visible")


def test_malloc_tuning_applies_in_a_fresh_process():
    code = (
        "import json; from service.memory import tune_malloc; "
        "print(json.dumps([tune_malloc(2, 128), tune_malloc(0, 0)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    applied, untouched = json.loads(result.stdout)
    assert applied == {"arena_max": 2, "mmap_threshold_kb": 128} and untouched == {}
