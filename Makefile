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
# A Pulumi CLI on PATH wins; otherwise scripts/install_pulumi.sh puts the pinned one here.
TOOLS_DIR := $(CURDIR)/.tools
export PATH := $(PATH):$(TOOLS_DIR)/pulumi

.PHONY: help install test test-fast test-image up down preview prerequisites bench load-test fuzz image lint clean

help:
	@echo "make up            deploy the reranker on the local Docker engine (Pulumi stack '$(STACK)'); checks Docker"
	@echo "                   and the Pulumi CLI first (installs the pinned CLI into .tools/ if it is missing)"
	@echo "make down          destroy the '$(STACK)' stack"
	@echo "make preview       pulumi preview of the '$(STACK)' stack (STACK=prod for production)"
	@echo "make install       create .venv and install requirements/dev.txt (Python 3.11)"
	@echo "make test          install everything and run all tests (image tests need a Docker engine)"
	@echo "make test-fast     the tests that need no Docker engine"
	@echo "make test-image    only the Docker image tests"
	@echo "make lint          hadolint the Dockerfile"
	@echo "make bench         benchmark this service against the seed-style server and Infinity (BENCH_ARGS=...)"
	@echo "make load-test     the image at twice the measured throughput for 60 s, under 1 GB (CI runs 20 s)"
	@echo "make fuzz          the larger fuzz run (1000 random examples per strategy; CI runs 40, fixed)"
	@echo "make image         build the production image (real model from the Hub, CPU torch)"
	@echo "make prerequisites check Docker and the Pulumi CLI (what make up/preview/down do first)"
	@echo "make clean         remove .venv, .tools and .pytest_cache"
	@echo "make help          this list"

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

prerequisites:
	@bash scripts/check_prerequisites.sh

# Prerequisites first, then .venv (`make` would otherwise install 1.7 GB before finding Pulumi missing).
define pulumi_stack
	@bash scripts/check_prerequisites.sh
	@$(MAKE) --no-print-directory install
	@mkdir -p $(PULUMI_STATE_DIR)
	pulumi login file://$(PULUMI_STATE_DIR) >/dev/null
	pulumi stack select $(STACK) 2>/dev/null || pulumi stack init $(STACK)
endef

up:
	$(pulumi_stack)
	pulumi up --yes --stack $(STACK)
	pulumi stack output --stack $(STACK)

preview:
	$(pulumi_stack)
	pulumi preview --stack $(STACK)

down:
	$(pulumi_stack)
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
	rm -rf $(VENV) $(TOOLS_DIR) .pytest_cache
