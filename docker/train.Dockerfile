# FNAC training image: the torch stack (CUDA 13 wheels from PyPI, which also run on the CPU) plus the serving
# dependencies (`fnac export` verifies against ONNX Runtime). `fnac train` runs under torchrun, one process
# per visible GPU; every other verb runs as is (docker/entrypoint.sh).
#
#   DOCKER_BUILDKIT=1 docker build -f docker/train.Dockerfile -t fnac-train .
#   docker run --gpus all --shm-size 8g --user "$(id -u):$(id -g)" \
#     -v "$PWD/data:/data" -v "$PWD/runs:/runs" fnac-train train --data /data/vggss -o /runs/fnac
#
# Same build arguments and pip_cert secret as the root Dockerfile (BASE_IMAGE: any Debian-based image).

ARG BASE_IMAGE=python:3.11-slim

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
    mkdir -p /data /runs; \
    chown fnac:fnac /runs
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /home/fnac

FROM python AS wheel
RUN --mount=type=bind,target=/src,rw \
    --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    cd /src; \
    mkdir /wheels; \
    python docker/requirements.py pyproject.toml train > /wheels/requirements-train.txt; \
    pip wheel --no-deps --wheel-dir /wheels .

FROM python
COPY --from=wheel /wheels/requirements-train.txt /opt/venv/requirements-train.txt
RUN --mount=type=secret,id=pip_cert \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install -r /opt/venv/requirements-train.txt; \
    # ONNX Runtime's CUDA provider (used by `fnac export --fp16` / `fnac score`) finds the CUDA libraries of
    # the torch wheels through the loader path.
    site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | sort > /etc/ld.so.conf.d/fnac-nvidia-wheels.conf; \
    ldconfig; \
    python -c 'import torch, torchaudio, torchvision, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)'

RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,source=docker/entrypoint.sh,target=/tmp/entrypoint.sh \
    pip install --no-deps --no-index /wheels/*.whl \
    && install -m 0755 /tmp/entrypoint.sh /usr/local/bin/fnac-entrypoint

# Caches that torch, matplotlib and friends write go to /tmp, so any --user uid works.
ENV XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.matplotlib
USER fnac
ENTRYPOINT ["fnac-entrypoint"]
CMD ["--help"]
