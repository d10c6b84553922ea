# Chorus: `make run` starts the suite locally, `make test` runs every test. Both install what is
# missing first (a virtual environment under ~/.cache/chorus keyed by the dependency files).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(shell $(PYTHON) scripts/env_path.py)
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/gen:$(CURDIR)
PROTOS := $(wildcard protos/chorus/v1/*.proto)
GEN_STAMP := gen/.stamp

.PHONY: env system-deps protos run test test-fast bench soak lint lock clean help envoy-validate

help:
	@echo "make run    start the whole suite on 127.0.0.1 and print its addresses"
	@echo "make test   run the test suite"
	@echo "make test-fast  the in-process tests only (no model, no server process): seconds"
	@echo "make bench  run the benchmarks (bench/)"
	@echo "make soak   load and soak with faults (SOAK_USERS=6 SOAK_MINUTES=10 SOAK_FAULTS=1 SOAK_OUT=dir)"
	@echo "make lint   ruff (rules and formatting) and mypy (strict; configured in pyproject.toml)"
	@echo "make lock   re-resolve pyproject.toml into requirements/lock.txt (uv, with hashes)"
	@echo "make envoy-validate  render deploy/envoy for local and container use; envoy --mode validate both"

env: $(VENV)/.ready

$(VENV)/.ready:
	scripts/bootstrap.sh $(VENV)

system-deps:
	@scripts/system_deps.sh

# Generated code lives in gen/ only (never beside hand-written code), rebuilt when a proto changes.
protos: $(GEN_STAMP)

$(GEN_STAMP): $(PROTOS) scripts/gen_protos.py $(VENV)/.ready
	$(PY) scripts/gen_protos.py
	@touch $@

run: env protos
	CHORUS_ENVOY=$(ENVOY) $(PY) -m devtools.launcher

test: env system-deps protos
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast layer: in-process tests (stub channels, no model, no server process), seconds in all;
# `make test` runs them too. The two files beside tests/fast/ are in-process as well.
FAST_TESTS := tests/fast tests/test_registry.py tests/test_limits.py
test-fast: env protos
	$(PY) -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

bench: env system-deps protos
	$(PY) bench/speech.py
	$(PY) bench/stt_stream.py
	$(PY) bench/speech_api.py
	$(PY) bench/models.py
	$(PY) bench/turn.py
	$(PY) bench/text.py
	$(PY) bench/gateway.py
	$(PY) bench/scale.py
	$(PY) bench/realtime.py
	$(PY) bench/storage.py

# Load and soak (bench/soak.py), outside `make test`: simulated users on the whole suite for
# SOAK_MINUTES, faults after warm-up (SOAK_FAULTS=0: none); report in SOAK_OUT (default
# .run/soak/<UTC time>/report.md). Exit status 1 on a lost request, a crash or a broken bound.
SOAK_USERS ?= 6
SOAK_MINUTES ?= 10
SOAK_FAULTS ?= 1
SOAK_OUT ?=
soak: env system-deps protos
	SOAK_USERS=$(SOAK_USERS) SOAK_MINUTES=$(SOAK_MINUTES) SOAK_FAULTS=$(SOAK_FAULTS) \
		SOAK_OUT=$(SOAK_OUT) $(PY) bench/soak.py

# mypy reads gen/ (the messages' .pyi stubs), hence protos; .ci/run lints before it tests.
LINT_PATHS := services gateway deploy devtools tests bench scripts
lint: env protos
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

# The Envoy config (deploy/envoy/envoy.yaml.j2), rendered both ways and checked by the real binary.
envoy-validate: env
	$(PY) -m deploy.envoy.render --mode local --validate
	$(PY) -m deploy.envoy.render --mode container --validate

# The one lock: every extra of pyproject.toml resolved together, hashes for every file, torch the
# CPU build (found in WHEELS: /opt/wheels on these machines, or a folder holding torch 2.13.0+cpu).
WHEELS ?= /opt/wheels
lock: env
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --generate-hashes \
		--override requirements/overrides.txt $(foreach d,$(WHEELS),--find-links $(d)) \
		--python-version 3.11 --no-emit-find-links --no-emit-index-url \
		--custom-compile-command "make lock" -o requirements/lock.txt

clean:
	rm -rf gen .pytest_cache
