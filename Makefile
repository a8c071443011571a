# Two commands do all set-up on a fresh machine (README.md):
#   make quickstart   # venv + tiny model + a real LoRA fine-tune on the CPU
#   make test         # venv + control-plane binaries + Prometheus + images + every CPU test tier (what CI runs)
# The venv is cached outside the clone, keyed by the Python version and requirements/lock.txt's hash.

SHELL := /bin/bash
PY ?= python3
CACHE ?= $(HOME)/.cache/finetune-operator
export FINETUNE_CACHE := $(CACHE)
PYVER := $(shell $(PY) -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
LOCKHASH := $(shell sha256sum requirements/lock.txt | cut -c1-12)
VENV := $(CACHE)/venv-$(PYVER)-$(LOCKHASH)
QS_MODEL := examples/quickstart/.model

.PHONY: venv quickstart preference test test-fast test-images images crd charts plan-doc errors-doc clean-quickstart

# .venv is this clone's own small venv layered on the cached one (scripts/clone_venv.py): its `finetune` runs this
# clone's code, whichever clone used the cache last. Nothing is installed into the shared venv.
venv: $(VENV)/.complete
	@$(VENV)/bin/python -m pip uninstall -y -q finetune-operator >/dev/null 2>&1 || true
	@$(VENV)/bin/python scripts/clone_venv.py $(VENV)

# No prerequisite: the lock file's hash is in the venv's path, so a changed lock means a new venv; a fresh
# clone's newer file times must not rebuild a venv that is already complete.
$(VENV)/.complete:
	@echo "creating $(VENV) (first time: torch and friends, a few GB; cached afterwards)"
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q -r requirements/lock.txt
	touch $@

$(QS_MODEL): | venv
	.venv/bin/python -m finetune_trainer.tiny_model --out $(QS_MODEL) --corpus examples/quickstart/data/train.jsonl

quickstart: venv $(QS_MODEL)
	.venv/bin/finetune run examples/quickstart/job.yaml

# DPO and ORPO on the preference example (tiny model created the same way as the quickstart's).
PREF_MODEL := examples/preference/.model
$(PREF_MODEL): | venv
	.venv/bin/python -m finetune_trainer.tiny_model --out $(PREF_MODEL) --corpus examples/preference/data/train.jsonl

preference: venv $(PREF_MODEL)
	.venv/bin/finetune run examples/preference/dpo.yaml
	.venv/bin/finetune run examples/preference/orpo.yaml

clean-quickstart:
	rm -rf out/quickstart $(QS_MODEL)

# Both images, built with buildah from Dockerfile.operator/.trainer on a local base (docs/images.md); cached.
images:
	bash scripts/install-image-tools.sh
	bash scripts/build-images.sh operator trainer

# What CI runs: the fast tier, the slow tier (real CPU fine-tunes), the image tier (both images built and run),
# the cluster tier (real control plane, kwok GPU nodes and a real kubelet node running the trainer image).
test: venv images
	bash scripts/install-cluster-tools.sh
	bash scripts/install-prometheus.sh
	.venv/bin/python -m pytest -m "not gpu" -o addopts="--strict-markers -p no:cacheprovider --import-mode=importlib" -q tests

test-fast: venv
	.venv/bin/python -m pytest -q

# The image tier alone: build both images (cached) and check what they hold by running them.
test-images: venv images
	.venv/bin/python -m pytest -m images -q tests/images

crd: venv
	.venv/bin/python -m finetune_api.crd
	.venv/bin/python -m finetune_api.docs

# The chart's generated monitoring files (Grafana dashboard, alert rules): a build step with dev-only tools
# (grafana-foundation-sdk), kept out of the operator package; tests fail when the checked-in files are stale.
charts: venv
	PYTHONPATH=monitoring .venv/bin/python -m finetune_monitoring.dashboard

# docs/node-plans.md: what fits on 2xH200, from the planner (a test fails when it is stale)
plan-doc: venv
	.venv/bin/python -m finetune_cli.node_plan
# docs/errors.md: what `finetune validate` says for each malformed spec of the corpus (tests/support/spec_corpus*.py)
errors-doc: venv
	PYTHONPATH=tests .venv/bin/python -m support.errors_doc
