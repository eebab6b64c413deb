# Set-up installs torch==2.13.0 only when no torch is importable, so a torch that is
# already there (Colab, a CUDA build) is kept; everything else comes from pyproject.toml.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .cache/setup.stamp

.PHONY: setup demo test bench notebook lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	@mkdir -p .cache && touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PYTHON) -m utils info
	$(PYTHON) -m utils check

test: setup
	$(PYTHON) -m pytest tests

bench: setup
	@for f in benchmarks/*.py; do echo "== $$f"; $(PYTHON) $$f || exit 1; done

# template.ipynb is generated from notebooks/template.py, never edited by hand
notebook: setup
	$(PYTHON) -m jupytext --to ipynb --update-metadata '{"jupytext": null}' -o template.ipynb notebooks/template.py

lint: setup
	$(PYTHON) -m ruff check utils tests benchmarks
	$(PYTHON) -m ruff format --check utils tests benchmarks

clean:
	rm -rf .cache build *.egg-info .pytest_cache
