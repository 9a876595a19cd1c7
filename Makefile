# Two commands do all the set-up on a fresh machine:
#   make demo   venv + torch + the project, then the main job on the embedded default (procedural twin):
#               a data preview, the CPU training preset (a few minutes), and a traversal of every action
#   make test   venv + torch + the project and its test and web-editor extras, then the test suite
PYTHON ?= python3
VENV ?= .venv
# The torch pins that install on the project's CPU machines (from local disk); override elsewhere,
# e.g. make test TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/causal-vqvae
DATA ?= dsprites

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(CLI) preview --data $(DATA) --out out/preview_$(DATA).png --sample out/sample_$(DATA).png
	$(CLI) train --data $(DATA) --preset cpu-small --out out/demo_$(DATA) --overwrite
	$(CLI) edit --model out/demo_$(DATA) --image out/sample_$(DATA).png --traverse --out out/traverse_$(DATA).png

# The test suite covers the web editor too: Gradio, and Playwright for its browser test.
$(VENV)/.installed-ui: $(VENV)/.installed
	$(PY) -m pip install --quiet --quiet -e ".[dev,ui,uitest]"
	touch $@

test: install $(VENV)/.installed-ui
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

clean:
	rm -rf $(VENV) out .pytest_cache
