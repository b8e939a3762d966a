# The verbs people reach for. `make demo` and `make test` install what they need first.
PY ?= python3
export PATH := $(dir $(shell command -v $(PY))):$(PATH)

.PHONY: install demo test test-fast lint bench stack-up stack-down docs

install:
	bash scripts/install.sh

demo:  ## the embedded demo needs no collector build (`demo --stack` builds it on first use)
	PAID_TELEMETRY_SKIP_GO=1 bash scripts/install.sh
	$(PY) -m paid_telemetry_ops.cli demo

test: install
	$(PY) -m pytest -q -rfE

test-fast:  ## unit tests only: no real services
	$(PY) -m pytest -q -m "not e2e"

lint:
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy

bench:
	$(PY) bench/bench.py

stack-up:
	$(PY) -m paid_telemetry_ops.cli stack up

stack-down:
	$(PY) -m paid_telemetry_ops.cli stack down

docs:
	$(PY) -m paid_telemetry_ops.cli docs metrics > docs/metrics.md
