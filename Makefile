# Every target sets up what it needs: on a fresh machine `make demo` and `make test` are all it takes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports fmt bench bench-webhook bench-fetch bench-ranges bench-gates bench-nodes constraints images clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "modelcache needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[dev]'
	@touch $(STAMP)

## demo: run the webhook locally over HTTPS and show what it does to the example workloads
demo: $(STAMP)
	$(BIN)/python -m devtools.demo

## test: every test (unit, golden admission cases, HTTPS handler, fuzz); e2e only with KUBECONFIG
test: $(STAMP)
	$(BIN)/python -m pytest

## check: lint + types + import contracts + tests
check: lint typecheck imports test

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m devtools.function_lengths

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports --no-logo

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: benchmarks that print tables (results go in docs/benchmarks.md)
bench: bench-webhook bench-fetch bench-ranges bench-gates bench-nodes

# KServe's storage initializer, a benchmark peer, brings cloud SDKs: it gets a virtualenv of its own.
PEERS := .venv-peers/.installed
$(PEERS):
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet "kserve-storage==0.21.0"
	@touch $(PEERS)

# AIBrix's downloader, a peer of the cold-copy benchmark (bench/cold.py), pins huggingface_hub 0.24 and
# brings hf_transfer: a virtualenv of its own too.
AIBRIX := .venv-aibrix/.installed
$(AIBRIX):
	$(PYTHON) -m venv .venv-aibrix
	.venv-aibrix/bin/python -m pip install --quiet "aibrix==0.8.0" "hf_transfer==0.1.9"
	@touch $(AIBRIX)

# Bytecode first, as the images have it: otherwise every start pays for compiling what changed.
COMPILE := $(BIN)/python -m compileall -q modelcache webhook fetcher certs

bench-fetch: $(STAMP) $(PEERS) $(AIBRIX)
	$(COMPILE)
	$(BIN)/python -m bench.fetch
	$(BIN)/python -m bench.cold

# One large file (one stream, parallel ranges, 8-range curl; local and behind a per-connection cap), the
# phases of a cold copy, and 8 pods on one cache against one copy (docs/benchmarks.md, issue 17).
bench-ranges: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.ranges
	$(BIN)/python -m bench.phases
	$(BIN)/python -m bench.waiters

# Seconds each pod of a Deployment holds a node before its model is ready, with and without the
# scheduling gate, and the gate check's admission cost (docs/benchmarks.md, issue 15).
bench-gates: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.gates

# Node-local caches: origin bytes for pods spread over M nodes' caches, and the hit on a warmed node
# against the hit on a pod-filled cache (docs/benchmarks.md, issue 16).
bench-nodes: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.nodes

bench-webhook: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m bench.webhook

## images: build modelcache-fetcher:$(IMAGE_TAG) and modelcache-webhook:$(IMAGE_TAG) (podman, else docker)
IMAGE_TAG ?= dev
IMAGE_REPOSITORY ?=
OCI ?= $(shell command -v podman || command -v docker)
images:
	@test -n "$(OCI)" || { echo "make images needs podman or docker on PATH (or OCI=/path/to/one)"; exit 1; }
	$(OCI) build -f Dockerfile.fetcher -t $(IMAGE_REPOSITORY)modelcache-fetcher:$(IMAGE_TAG) .
	$(OCI) build -f Dockerfile.webhook -t $(IMAGE_REPOSITORY)modelcache-webhook:$(IMAGE_TAG) .

## constraints: re-pin the exact versions every install uses (after changing pyproject.toml)
constraints:
	rm -rf /tmp/modelcache-pin && $(PYTHON) -m venv /tmp/modelcache-pin
	/tmp/modelcache-pin/bin/python -m pip install --quiet --upgrade "pip>=24"
	/tmp/modelcache-pin/bin/python -m pip install --quiet -e '.[dev]'
	{ echo '# Exact versions every install uses (make, CI, images). Regenerate with `make constraints`.'; \
	  /tmp/modelcache-pin/bin/python -m pip freeze --exclude-editable --exclude modelcache | grep -v '^pip=='; \
	  grep -o 'setuptools==[0-9.]*' pyproject.toml; \
	} > constraints.txt

clean:
	rm -rf $(VENV) .venv-peers .venv-aibrix .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
