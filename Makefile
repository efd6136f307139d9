# Two entry points (see README.md):
#   make lab    set up .venv if needed and open the course in JupyterLab (ARGS=--no-browser headless)
#   make test   set up the same .venv and run the whole test suite
#   (make site  renders the lessons and exercises to a static HTML site in _site/;
#    make links rebuilds the Binder and Colab links from pyproject.toml's [tool.lstmkit] repository)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PORT   ?= 8888
# Jupyter refuses to run as root (containers, CI) unless told that it is on purpose.
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab test site links install lint clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is needed: run make with PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lstmkit)" > /dev/null
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(BIN)/lstmkit doctor || true
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks --port=$(PORT) $(AS_ROOT) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/python tests/run_all.py

site: $(STAMP)
	$(BIN)/python tools/build_site.py _site

links: $(STAMP)
	$(BIN)/python tools/course_links.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis _site tests/screenshots
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
