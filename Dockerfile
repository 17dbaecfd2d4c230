# FNAC serving image: FastAPI on ONNX Runtime (GPU build, runs on the CPU when no GPU is visible). No torch.
#
#   docker build -t fnac .                                   # CUDA 13 (NVIDIA driver 580+), CUDA wheels from PyPI
#   docker build --build-arg CUDA_MAJOR=12 -t fnac:cuda12 .  # CUDA 12 (driver 525+): onnxruntime-gpu < 1.27
#   docker build --build-arg CUDA_WHEELS=0 -t fnac:cpu .     # no CUDA libraries: CPU only, same code
#   docker run --gpus all -p 8000:8000 fnac                  # serves the bundled default model
#
# CUDA_MAJOR picks the onnxruntime-gpu releases built for that CUDA version: 13 -> 1.27 and later, whose CUDA
# provider needs a driver of the 580 series or newer; 12 -> 1.20-1.26, driver 525 or newer. On an older driver
# the CUDA 13 image serves on the CPU (`fnac doctor` in the container says why; FNAC_REQUIRE_GPU=true refuses).
#   docker run -p 8000:8000 -v $PWD/models:/models:ro -e FNAC_MODEL=/models/my.onnx fnac
#   docker build --build-arg EXTRAS=serve,scale -t fnac-score .   # + Ray, for `fnac score --engine ray`
#                                                            #   on a cluster (docker/k8s/rayjob.yaml)
#
# BASE_IMAGE: any Debian-based image. If it has no python3 able to make a venv (e.g. a debootstrap base,
# see docker/make_base.sh), apt installs python3 + python3-venv. A custom CA for PyPI, build time only:
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_cert,src=/path/to/ca.pem .
# The secret is mounted for the pip steps only and never lands in a layer.
#
# No `# syntax=` line on purpose: the builder's built-in Dockerfile frontend already knows RUN --mount, and
# fetching a frontend image needs a registry.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------- python
FROM ${BASE_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=120
RUN set -eu; \
    if ! python3 -m venv /opt/venv >/dev/null 2>&1; then \
        rm -rf /opt/venv; \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
        python3 -m venv /opt/venv; \
    fi; \
    /opt/venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11), sys.version'; \
    groupadd --gid 10001 fnac; \
    useradd --uid 10001 --gid fnac --home-dir /home/fnac --create-home --shell /usr/sbin/nologin fnac; \
    mkdir -p /models
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /home/fnac

# ---------------------------------------------------------------------------------------------- wheel
# The project itself, built into a wheel in a side stage from a bind mount of the context (no COPY layers):
# the final image gets the installed package, with the bundled model as package data, not the source tree.
# The serving requirements (core + the `serve` extra) are read from pyproject.toml here by
# docker/requirements.py; only that list's content keys the dependency layer below, so editing code or other
# parts of pyproject.toml does not reinstall the dependencies.
FROM python AS wheel
ARG EXTRAS=serve
ARG CUDA_MAJOR=13
ARG CUDA_WHEELS=1
RUN --mount=type=bind,target=/src,rw \
    --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    # A C compiler and Python's headers for the overlay painter's kernel (fnac/render/_blend.c), in this side
    # stage only: the final image gets the built wheel, not the compiler.
    include="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"; \
    dev=""; [ -f "$include/Python.h" ] || dev="python3-dev"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev $dev; \
    cd /src; \
    mkdir /wheels; \
    cuda_wheels=""; if [ "$CUDA_WHEELS" = 1 ]; then cuda_wheels="--cuda-wheels"; fi; \
    python docker/requirements.py pyproject.toml $(echo "$EXTRAS" | tr , ' ') --cuda-major "$CUDA_MAJOR" $cuda_wheels \
        > /wheels/requirements-serve.txt; \
    pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------- serve
FROM python
# EXTRAS: the project's extras to install; the serving image carries `serve` only. With `scale` (Ray, for
# offline scoring on a cluster) the image also gets what KubeRay expects of a Ray image: Ray's dashboard and
# job server (ray[default]) and wget for its probes.
ARG EXTRAS=serve
COPY --from=wheel /wheels/requirements-serve.txt /opt/venv/requirements-serve.txt
# The requirements carry the onnxruntime-gpu pin for CUDA_MAJOR and, with CUDA_WHEELS=1, its `cuda,cudnn`
# extras: the CUDA runtime + cuDNN from PyPI, so no CUDA base image is needed; the host needs only the NVIDIA
# driver and container toolkit. CUDA_WHEELS=0 leaves them out (about 2 GB smaller: 0.87 vs 3.0 GB; ONNX
# Runtime then runs on the CPU provider only).
ARG CUDA_MAJOR=13
LABEL org.fnac.cuda-major="${CUDA_MAJOR}"
RUN --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    extras=""; \
    case ",$EXTRAS," in \
        *,scale,*) \
            extras="$extras ray[default]"; \
            apt-get update; \
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget; \
            rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb ;; \
    esac; \
    pip install -r /opt/venv/requirements-serve.txt $extras; \
    # ONNX Runtime's CUDA provider dlopens libcublas/libcudnn by soname, without an rpath into the nvidia
    # wheels: put their lib directories on the loader path.
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    if [ -d "$site/nvidia" ]; then \
        find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | sort > /etc/ld.so.conf.d/fnac-nvidia-wheels.conf; \
        ldconfig; \
    fi; \
    python -c 'import onnxruntime, av, fastapi, uvicorn, PIL; print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())'; \
    # The installed build must be the one CUDA_MAJOR asked for.
    python -c 'import sys; from onnxruntime.capi import build_and_package_info as b; v = getattr(b, "cuda_version", ""); print("built for CUDA", v); sys.exit(0 if v.split(".")[0] == sys.argv[1] else "onnxruntime-gpu is built for CUDA %s, not %s" % (v, sys.argv[1]))' "$CUDA_MAJOR"

RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps --no-index /wheels/*.whl \
    && python -c 'import service.config as c; print("bundled model:", c.DEFAULT_MODEL, "present" if c.DEFAULT_MODEL.is_file() else "MISSING")' \
    && python -c 'from fnac.render import _blend; print("overlay painter: compiled")'

# Listen on all interfaces inside the container; the port follows FNAC_PORT (published with -p).
ENV FNAC_HOST=0.0.0.0 \
    FNAC_PORT=8000
EXPOSE 8000
USER fnac
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FNAC_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["fnac"]
CMD ["serve"]
