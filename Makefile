# ssimctr: `make run` and `make test` each work alone on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format mutation sweep ui server bench bench-scale bench-vs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the default experiment on the built-in synthetic data
	$(BIN)/ssimctr

test: $(STAMP)  ## the test suite (slow end-to-end tests included); pytest's 5 (nothing selected) is not a failure
	$(BIN)/pytest -q || [ $$? -eq 5 ]

test-fast: $(STAMP)  ## without the tests marked slow
	$(BIN)/pytest -q -m "not slow" || [ $$? -eq 5 ]

lint: $(STAMP)  ## ruff: lint and formatting check (configured in pyproject.toml)
	$(BIN)/ruff check ssimctr tests bench
	$(BIN)/ruff format --check ssimctr tests bench

format: $(STAMP)  ## ruff: fix what can be fixed and format
	$(BIN)/ruff check --fix ssimctr tests bench
	$(BIN)/ruff format ssimctr tests bench

mutation: $(STAMP)  ## mutmut on ssimctr/ssim/ and train/sharing.py against tests/ssim, tests/train (slow; not in CI)
	rm -rf mutants
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(or $(JOBS),2)
	$(BIN)/mutmut results

sweep: $(STAMP)  ## a small multirun: regimes x seeds, one parent MLflow run
	$(BIN)/ssimctr -m regime=mt,mt_s,single seed=1,2,3

ui: $(STAMP)  ## MLflow UI on the local store: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --port 5000

# make server: one MLflow tracking server for parallel jobs (hydra/launcher=joblib, submitit, ray) and other
# machines, which log over HTTP with MLFLOW_TRACKING_URI=http://$(SERVER_HOST):$(SERVER_PORT). SQLite by
# default; a PostgreSQL database with SERVER_DB=postgresql://user:password@host:5432/mlflow (pip install
# -e '.[postgres]'). Other machines: SERVER_HOST=0.0.0.0 SERVER_ALLOWED=<this host's name>:$(SERVER_PORT).
SERVER_DB ?= sqlite:///outputs/server/mlflow.db
SERVER_ARTIFACTS ?= outputs/server/artifacts
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
SERVER_WORKERS ?= 4
SERVER_ALLOWED ?=

server: $(STAMP)  ## shared MLflow tracking server (SQLite, or SERVER_DB=postgresql://...); jobs: MLFLOW_TRACKING_URI=http://127.0.0.1:5000
	mkdir -p outputs/server $(SERVER_ARTIFACTS)
	$(BIN)/mlflow server --backend-store-uri '$(SERVER_DB)' --artifacts-destination $(SERVER_ARTIFACTS) --serve-artifacts \
		--host $(SERVER_HOST) --port $(SERVER_PORT) --workers $(SERVER_WORKERS) $(if $(SERVER_ALLOWED),--allowed-hosts '$(SERVER_ALLOWED)')

bench: $(STAMP)  ## preparation time, training rows/s per model and per vocabulary size (sparse vs dense Adam), SSIM search cost, cold-start methods' epoch cost, text encoding and text fields' cost, data-parallel scaling, peak memory
	$(BIN)/python bench/train_speed.py --backbones all --regimes single,mt --scenarios 3,10 --repeats 2 --ssim  # single vs mt per model at K = 3 and 10, SSIM search vs mt
	$(BIN)/python bench/vocab_sweep.py  # 10k -> 10M ids: rows/s and peak RSS, sparse_adam vs adam
	$(BIN)/python bench/coldstart_speed.py
	$(BIN)/python bench/text_speed.py  # minilm: texts/s where the text extra is installed
	$(BIN)/python bench/ddp_speed.py  # trainer=ddp: train rows/s of 1 vs 2 torchrun processes (gloo)

bench-scale: $(STAMP)  ## preparation of 5M, 10M and 20M-row CSV files: wall time, rows/s, peak RSS
	$(BIN)/python bench/scale.py --train

bench-vs: $(STAMP)  ## ssimctr against DeepCTR-Torch: one DNN epoch on the same 1M rows with the same model and optimizer
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/vs_deepctr.py

clean:  ## remove outputs (runs, MLflow store, data cache); keeps .venv
	rm -rf outputs multirun mlruns .pytest_cache
