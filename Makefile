# The README's first two commands: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/install.sh 2>/dev/null | md5sum | cut -c1-12)
DEMO_DIR ?= demo_data

.PHONY: install demo test lint bench ray-up ray-down clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(PY) -m sparse_det.demo --out $(DEMO_DIR)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/detector.py --project data/heldout_ood --json bench/detector.json

# A local Ray cluster for `ray job submit`: everything bound to 127.0.0.1.
ray-up: install
	$(VENV)/bin/ray start --head --node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
		--port 6379 --dashboard-port 8265 --include-dashboard true

ray-down:
	$(VENV)/bin/ray stop

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
