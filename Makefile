# The two commands that matter on a fresh machine: `make up` (deploy the reranker on the local Docker
# engine with Pulumi) and `make test`. Both install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev
PULUMI_STATE_DIR ?= $(CURDIR)/.pulumi-state
# Local file backend: no Pulumi account needed. Secrets in the dev stack are encrypted with this
# passphrase; set your own (export PULUMI_CONFIG_PASSPHRASE=...) for anything shared.
export PULUMI_CONFIG_PASSPHRASE ?= reranker-local-dev
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help install test test-fast test-image up down preview bench load-test fuzz image lint clean

help:
	@echo "make up         deploy the reranker on the local Docker engine (Pulumi stack '$(STACK)')"
	@echo "make test       install everything and run all tests (image tests need a Docker engine)"
	@echo "make test-fast  the tests that need no Docker engine"
	@echo "make bench      benchmark this service against the seed-style server and Infinity"
	@echo "make load-test  the image at twice the measured throughput for 60 s, under 1 GB (CI runs 20 s)"
	@echo "make fuzz       the larger fuzz run (1000 random examples per strategy; CI runs 40, fixed)"
	@echo "make image      build the production image (real model from the Hub, CPU torch)"
	@echo "make down       destroy the '$(STACK)' stack"

install: $(VENV)/.installed

$(VENV)/.installed: requirements/*.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "error: Python 3.11 is required (the pins and the image use 3.11); set PYTHON=python3.11" >&2; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements/dev.txt
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not image" $(PYTEST_ARGS)

test-image: install
	$(PY) -m pytest -m image $(PYTEST_ARGS)

define require_pulumi
	@command -v pulumi >/dev/null || { echo "error: the Pulumi CLI is not installed: see https://www.pulumi.com/docs/install/ (curl -fsSL https://get.pulumi.com | sh)" >&2; exit 1; }
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "error: no Docker engine is reachable: install Docker and start it (docker info must work)" >&2; exit 1; }
	@mkdir -p $(PULUMI_STATE_DIR)
	pulumi login file://$(PULUMI_STATE_DIR) >/dev/null
	pulumi stack select $(STACK) 2>/dev/null || pulumi stack init $(STACK)
endef

up: install
	$(require_pulumi)
	pulumi up --yes --stack $(STACK)
	pulumi stack output --stack $(STACK)

preview: install
	$(require_pulumi)
	pulumi preview --stack $(STACK)

down: install
	$(require_pulumi)
	pulumi destroy --yes --stack $(STACK)

bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

load-test: install
	RERANK_LOAD_SECONDS=60 $(PY) -m pytest -m image tests/image/test_load.py -s $(PYTEST_ARGS)

fuzz: install
	RERANK_FUZZ_EXAMPLES=1000 RERANK_FUZZ_RANDOM=1 $(PY) -m pytest tests/service/test_fuzz.py -s $(PYTEST_ARGS)

image:
	docker build -t reranker:local .

lint: install
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache
