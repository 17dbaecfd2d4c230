# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: serve test lint format bench reliability clean system-deps docker-smoke docker-pins

# Serving environment: the `serve` extra only (no torch), then the service on the bundled default model.
$(BIN)/.serve-installed: pyproject.toml fnac/render/_blend.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $@

# Test environment: everything (torch stack, ONNX tooling, test tools) plus the Debian packages tests need.
$(BIN)/.dev-installed: pyproject.toml fnac/render/_blend.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(BIN)/.serve-installed

system-deps:
	@./scripts/system_deps.sh

serve: $(BIN)/.serve-installed
	$(BIN)/fnac serve --host $(HOST) --port $(PORT)

test: $(BIN)/.dev-installed system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(BIN)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/.dev-installed
	$(BIN)/fnac bench model
	$(BIN)/fnac bench service

# Reliability/security/performance evidence (docs/RELIABILITY.md): long parts, each under its own time bound.
reliability: $(BIN)/.dev-installed system-deps
	timeout 600 $(BIN)/python -m benchmarks.reliability malformed --rounds 5
	timeout 900 $(BIN)/python -m benchmarks.reliability fuzz --seconds 300
	timeout 600 $(BIN)/python -m benchmarks.reliability schemathesis --seconds 180
	timeout 300 $(BIN)/python -m benchmarks.reliability load --concurrency 32 --seconds 60
	timeout 4200 $(BIN)/python -m benchmarks.reliability soak --minutes 60 --concurrency 4 --warmup-s 300
	timeout 1500 $(BIN)/python -m benchmarks.reliability kill-train --kills 12 --torchrun-kills 4
	timeout 300 $(BIN)/python -m benchmarks.reliability decode-speed

# The serving image, CUDA 13 (the default, driver 580+) built and run end to end; see docker/smoke.sh.
docker-smoke:
	docker/smoke.sh

# Both CUDA variants of the image resolve their pins (onnxruntime-gpu + its CUDA wheels) against the package
# index, without building: CUDA 12 = onnxruntime-gpu 1.20-1.26 (driver 525+), CUDA 13 = 1.27+ (driver 580+).
docker-pins: $(BIN)/.dev-installed
	for cuda in 12 13; do \
	  $(BIN)/python docker/requirements.py pyproject.toml serve --cuda-major $$cuda --cuda-wheels > .docker-pins-$$cuda.txt && \
	  $(BIN)/python -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: --target .docker-pins-target \
	    --report .docker-pins-$$cuda.json -r .docker-pins-$$cuda.txt && \
	  $(BIN)/python -c 'import json, sys; r = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}; \
	    ort = r["onnxruntime-gpu"]; print("CUDA", sys.argv[2], "->", "onnxruntime-gpu", ort, "+", ", ".join(sorted(k + " " + v for k, v in r.items() if k.startswith("nvidia")))); \
	    major = 13 if tuple(map(int, ort.split(".")[:2])) >= (1, 27) else 12; sys.exit(0 if major == int(sys.argv[2]) else "wrong line")' \
	    .docker-pins-$$cuda.json $$cuda || exit 1; \
	done; rm -rf .docker-pins-*

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
