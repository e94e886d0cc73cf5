# ssimctr: `make run` and `make test` each work alone on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs
# what the test suite exercises besides dev: text_encoder=minilm (text), the joblib / submitit / Optuna
# launchers and sweeper (sweep), the Ray launcher (ray), the tracking server on PostgreSQL (postgres)
TEST_EXTRAS := dev,text,sweep,postgres,ray

.PHONY: run test test-fast lint format docs mutation sweep ui server bench bench-scale bench-vs clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $(TEST_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

run: $(STAMP)  ## the default experiment on the built-in synthetic data
	$(BIN)/ssimctr

test: $(TEST_STAMP)  ## the test suite with every extra it exercises (slow end-to-end tests included); pytest's 5 (nothing selected) is not a failure
	$(BIN)/pytest -q || [ $$? -eq 5 ]

test-fast: $(TEST_STAMP)  ## without the tests marked slow
	$(BIN)/pytest -q -m "not slow" || [ $$? -eq 5 ]

lint: $(STAMP)  ## ruff: lint and formatting check (configured in pyproject.toml)
	$(BIN)/ruff check ssimctr tests bench
	$(BIN)/ruff format --check ssimctr tests bench

docs: $(DOCS_STAMP)  ## the documentation site (mkdocs Material, mkdocs.yml) into site/; --strict: a broken link fails
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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
# -e '.[postgres]'). Other machines: SERVER_HOST=0.0.0.0 SERVER_ALLOWED=<this host's name>:$(SERVER_PORT); off
# the loopback address the server runs MLflow's basic authentication (SERVER_AUTH=1: on 127.0.0.1 too), its users
# in SERVER_AUTH_DB, its admin SERVER_ADMIN with the password of SSIMCTR_SERVER_ADMIN_PASSWORD or of the file
# SSIMCTR_SERVER_ADMIN_PASSWORD_FILE names (never on this command line); SERVER_DEFAULT_PERMISSION: what a user
# may do in the experiments of others (NO_PERMISSIONS, READ, EDIT, MANAGE); SERVER_AUTH_CACHE: seconds a worker
# trusts a login it checked (0: hash the password at every request). docs/tracking-server.md
SERVER_DB ?= sqlite:///outputs/server/mlflow.db
SERVER_ARTIFACTS ?= outputs/server/artifacts
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
SERVER_WORKERS ?= 4
SERVER_ALLOWED ?=
SERVER_AUTH ?=
SERVER_ADMIN ?= admin
SERVER_AUTH_DB ?= sqlite:///outputs/server/basic_auth.db
SERVER_DEFAULT_PERMISSION ?= READ
SERVER_AUTH_CACHE ?= 60

server: $(STAMP)  ## shared MLflow tracking server (SQLite, or SERVER_DB=postgresql://...); users and passwords off 127.0.0.1 (docs/tracking-server.md)
	$(BIN)/python -m ssimctr.tracking.server --db '$(SERVER_DB)' --artifacts '$(SERVER_ARTIFACTS)' --host '$(SERVER_HOST)' \
		--port $(SERVER_PORT) --workers $(SERVER_WORKERS) $(if $(SERVER_ALLOWED),--allowed-hosts '$(SERVER_ALLOWED)') \
		--admin '$(SERVER_ADMIN)' --auth-db '$(SERVER_AUTH_DB)' --default-permission '$(SERVER_DEFAULT_PERMISSION)' \
		--auth-cache-seconds $(SERVER_AUTH_CACHE) --state outputs/server $(if $(filter 1 yes true on,$(SERVER_AUTH)),--auth)

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
