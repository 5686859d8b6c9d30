# mobileseg — the two commands that must work on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The authors' checkpoints: ../shared/weights beside the clone, or any folder holding them.
WEIGHTS_DIR ?= $(abspath ../shared/weights)
export MOBILESEG_WEIGHTS_DIR ?= $(WEIGHTS_DIR)
export MOBILESEG_PEERS_DIR ?= $(abspath ../shared/peers)

.PHONY: setup demo test bench parity parity-structure mil-conformance clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (mobileseg needs CPython 3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	@touch $@

# Exports SINet to ONNX, Core ML and TFLite with the authors' weights, checks parity against PyTorch on every
# runtime here, prints the table (about a minute).
demo: setup
	$(BIN)/mobileseg models
	@if [ -f "$(MOBILESEG_WEIGHTS_DIR)/sinet_portrait_eg1800.pth" ]; then \
	  $(BIN)/mobileseg export sinet --target all --out artifacts/sinet --force; \
	else \
	  echo "note: official SINet weights not found in $(MOBILESEG_WEIGHTS_DIR); exporting seeded random weights"; \
	  $(BIN)/mobileseg export sinet --target all --random-weights --out artifacts/sinet --force; \
	fi
	$(BIN)/mobileseg verify artifacts/sinet

test: setup
	$(BIN)/pytest -q

# The zoo's parity matrix (model × target × precision × runtime), int8 included: results/parity.{json,md};
# the five trained models three at a time on this 2-core machine (one export keeps only about one core busy).
TRAINED := -m sinet -m extremec3net -m sinet-cityscapes -m c3net -m c3netv2
parity: setup
	$(BIN)/mobileseg matrix $(TRAINED) --precision int8 --jobs 3 --out results/parity.json --markdown results/parity.md

# The structure-only networks (SegNet, the thesis' eight) at their default sizes, one at a time: an export at
# 2048×1024 peaks at ~12 GB; about 10–25 min each here (docs/segnet.md, docs/thesis-semantic.md).
parity-structure: setup
	$(BIN)/mobileseg matrix -m segnet -m segnet-basic -m segnet-sunrgbd -m sqznet-base -m sqznet-fcn8 -m sqznet-stride8 \
	  -m mn-base -m mn-fcn16 -m mn-fcn8 -m mn-stride16 -m mn-stride8 --precision int8 \
	  --out results/parity-structure.json --markdown results/parity-structure.md

# coremltools' own MIL op tests through the MIL reference executor, every module it is meant for (~40 min):
# results/mil_conformance.json; `make test` runs an 80-second selection (docs/mil-reference.md).
mil-conformance: setup
	$(BIN)/python tests/mil_conformance/run.py --full --out results/mil_conformance.json

bench: setup
	$(BIN)/mobileseg bench-suite --out results/bench.json

clean:
	rm -rf artifacts results .pytest_cache
