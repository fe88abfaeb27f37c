# The README's commands. `make book` and `make test` create the virtual environment when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cfct-installed
export CFCT_MIRROR ?= $(abspath ../shared/data)

.PHONY: venv book test lint bench clean-book notebooks slurm-deps

$(STAMP): requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cfct)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Executes every page in _toc.yml with the default (quick) profile through jupyter-cache, renders HTML into
# _build/html, and fails when any page raised in a cell. Sphinx reads pages in name order, so the claims ledger
# (book/) is read before the chapters have stored their claims; the second pass re-reads only that page
# (it is always executed: `mystnb: execution_mode: force`) and takes seconds.
book: venv
	$(BIN)/jupyter-book build . --keep-going
	touch book/claims_ledger.md
	$(BIN)/jupyter-book build . --keep-going
	$(BIN)/python -m cfct.runner check-book _build/html

# The .ipynb twins of the chapters (for Colab and Binder) are generated from the .md, which stays the source of
# truth (--update keeps the cell ids of an existing twin, so diffs stay small); tests/test_notebooks.py fails
# when a committed twin differs from its .md.
notebooks: venv
	$(BIN)/jupytext --to ipynb --update chapters/[0-9]*.md

lint: venv
	$(BIN)/ruff check cfct tests bench

test: venv lint
	$(BIN)/python -m pytest

bench: venv
	for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean-book:
	rm -rf _build

# Debian's Slurm and munge for the local single-node Slurm the test suite starts (tests/_slurm.py); needs root and
# the Debian registry. Idempotent: installs nothing when both are there, runs apt-get update only when needed.
SLURM_PKGS := slurm-wlm munge
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then \
		echo "slurm-deps: slurm-wlm and munge already installed"; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "slurm-deps: not root; skipping (the Slurm tests will be skipped, saying why)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y $(SLURM_PKGS) || \
			{ apt-get update && apt-get install -y $(SLURM_PKGS); }; \
	fi
