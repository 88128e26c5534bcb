# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= train,aws,postgres,local,pipeline,ui,dev

.PHONY: install serve ui test lint typecheck unit bench bench-server bench-oip bench-rollouts bench-tuning bench-scale aws-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

## Start the service on http://127.0.0.1:3000 (demo models are trained on first start).
HOST ?= 127.0.0.1
PORT ?= 3000

serve: install
	$(VENV)/bin/mlfn serve --host $(HOST) --port $(PORT)

## The web UI on http://127.0.0.1:8501 (start `make serve` first). `make ui PORT=8502` or
## UI_PORT=8502 picks its port: PORT counts only when given on the make command line, so an
## exported PORT (the API's) never moves the UI onto the API's port.
UI_PORT ?= $(if $(filter command line,$(origin PORT)),$(PORT),8501)

ui: install
	$(VENV)/bin/streamlit run ui/app.py --server.port $(UI_PORT) --server.headless true --server.maxUploadSize 1024 \
		--browser.gatherUsageStats false --client.toolbarMode minimal

## The whole test suite: lint, types, tests.
test: lint typecheck unit

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy common

unit: install
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/bench_forward.py

## The local server under HTTP load against a bare FastAPI + ONNX Runtime floor (wrk, ~4 min).
bench-server: install
	$(PY) bench/bench_server.py

## MLServer 1.7 vs mlfn serve through the same tritonclient (creates .bench-venvs/mlserver on first run), ~2.5 min.
bench-oip: install
	$(PY) bench/bench_oip.py

## forward p50 with no rollout, a 10 % canary and a shadow, Lambda handler and server core (~1 min).
bench-rollouts: install
	$(PY) bench/bench_rollouts.py

## a tuned random forest (8 grid candidates as jobs) with 1 and with 2 worker processes (~2 min).
bench-tuning: install
	$(PY) bench/bench_tuning.py

## a 1 GB CSV ingested through an upload (peak RSS) and scored as a batch job with 1 and 2 workers beside the ONNX Runtime floor, then bench-tuning (~12 min).
bench-scale: install
	$(PY) bench/bench_scale.py

## SAM/CloudFormation lint, sam build of the zip functions + layer, size limits, compose config.
aws-check: install
	bash infra/aws/check.sh

clean:
	rm -rf $(VENV) .venv-aws-tools .mlfn .aws-sam .bench-venvs
