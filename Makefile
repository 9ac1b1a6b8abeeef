# The README's first two commands: `make demo` and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml scripts/install.sh 2>/dev/null | md5sum | cut -c1-12)
DEMO_DIR ?= demo_data

.PHONY: install demo test test-fast lint bench bench-families bench-reconstructions bench-compare ray-up ray-down ray-train clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(PY) -m sparse_det.demo --out $(DEMO_DIR)

test: install
	$(PY) -m pytest -q --durations=10

# Everything but the tests marked slow (Ray cluster, Ray Train jobs, training end to end).
test-fast: install
	$(PY) -m pytest -q --durations=10 -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

# The 21 held-out runs (made first where missing, ~4 min) and the shipped default on them.
bench: install
	$(PY) -m data_tools.datasets make heldout_21
	$(PY) bench/detector.py --no-stages @configs/heldout_21.args --json bench/detector.json

# heldout_21 and its second draw (44 runs, ~10 min to make where missing, ~4 to bench), then
# each family pooled over both draws with a bootstrap interval over its runs.
bench-families: install
	$(PY) -m data_tools.datasets make heldout_21 heldout_second
	$(PY) bench/detector.py --no-stages @configs/heldout_44.args --json bench/heldout_44.json
	$(PY) bench/families.py bench/heldout_44.json @configs/families_44.args \
		--json bench/families_44.json

# The two held-out tilt families made another way (SIRT-like, the tilt axis 0.5-1.5 and
# 0.1-0.4 degrees off), benched and compared run by run with the originals (~30 min).
RECON := runs/bench_reconstructions
bench-reconstructions: install
	$(PY) -m data_tools.datasets make heldout_21 heldout_sirt heldout_axis heldout_axis_small
	mkdir -p $(RECON)
	$(PY) bench/detector.py --no-stages --project data/heldout_tilt \
		--project data/heldout_tiltwide --json $(RECON)/original.json
	for v in sirt axis axis_small; do \
		$(PY) bench/detector.py --no-stages --project data/heldout_tilt_$$v \
			--project data/heldout_tiltwide_$$v --json $(RECON)/$$v.json || exit 1; done
	$(PY) bench/compare.py --match-runs $(RECON)/original.json $(RECON)/sirt.json \
		$(RECON)/axis.json $(RECON)/axis_small.json

# Sparse against the dense U-Net baseline over an SNR sweep (~40 min on 2 cores).
bench-compare: install
	$(PY) bench/run.py --budget-s 1635 --extra-tune data/calib --json bench/results.json

# A local Ray cluster for `ray job submit`: dashboard and job API on 127.0.0.1; Ray's own gRPC
# ports listen on every interface whatever --node-ip-address says, so token auth is on (the
# token is ~/.ray/auth_token; clients need RAY_AUTH_MODE=token). Started from the project's
# venv, so a job's `python` is the project's; SPARSE_DET_ROOT makes a job's relative config
# paths (data, runs) land in this checkout, not in Ray's temporary copy of it.
ray-up: install
	RAY_AUTH_MODE=token $(VENV)/bin/ray get-auth-token --generate > /dev/null
	RAY_AUTH_MODE=token SPARSE_DET_ROOT=$(CURDIR) PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(VENV)/bin/ray start --head \
		--node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1 \
		--port 6379 --dashboard-port 8265 --include-dashboard true

# Submits configs/$(CONFIG).yaml training to the running cluster and follows its logs.
CONFIG ?= smoke
ray-train: install
	RAY_AUTH_MODE=token $(VENV)/bin/ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
		python -m ray_jobs.train --config configs/$(CONFIG).yaml

ray-down:
	$(VENV)/bin/ray stop

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
