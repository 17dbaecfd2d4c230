# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: serve test lint format bench reliability clean system-deps

# Serving environment: the `serve` extra only (no torch), then the service on the bundled default model.
$(BIN)/.serve-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $@

# Test environment: everything (torch stack, ONNX tooling, test tools) plus the Debian packages tests need.
$(BIN)/.dev-installed: pyproject.toml
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
	timeout 900 $(BIN)/python -m benchmarks.reliability soak --minutes 10
	timeout 1500 $(BIN)/python -m benchmarks.reliability kill-train --kills 12 --torchrun-kills 4
	timeout 300 $(BIN)/python -m benchmarks.reliability decode-speed

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
