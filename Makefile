# The two quickstart commands: `make pipeline` and `make test`. Both install what is needed
# into .venv first (once, and again whenever requirements.txt changes).
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install pipeline test lint serve

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

pipeline: install
	dvc repro

lint: install
	ruff check .
	ruff format --check .
	lint-imports
	mypy

# pytest-xdist: one worker per core; --dist loadfile keeps a module's tests (and its module-scoped
# pipeline fixture) on one worker.
test: lint airflow browser
	python -m pytest -n auto --dist loadfile

serve: install
	SATPIPE_REPO=. uvicorn serve.app:create_app --factory --host 127.0.0.1 --port 8000

# Headless Chromium for the browser tests (tests/browser.py): Debian's chromium and its
# chromedriver, installed with apt-get when missing (as root; otherwise those tests skip). With
# the recommended packages (fonts-liberation among them), as the tests were run.
CHROMIUM_PACKAGES := chromium chromium-driver
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "apt-get install $(CHROMIUM_PACKAGES)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && \
		apt-get install -y -qq $(CHROMIUM_PACKAGES) >/dev/null; \
	else \
		echo "browser: chromium missing and not root: browser tests will skip" \
			"(as root: apt-get install $(CHROMIUM_PACKAGES))" >&2; \
	fi

# Airflow in a venv of its own (its pins clash with requirements.txt); its DAG runs the stages
# with .venv's dvc. `make test` installs it too. See README, "Scheduled runs: Airflow".
AIRFLOW_VENV ?= orchestration/.venv
.PHONY: airflow

$(AIRFLOW_VENV)/.installed: orchestration/requirements.txt
	python3 -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-r orchestration/requirements.txt
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

# Builds the service image (Dockerfile) and checks it serves a pipeline run; as root, it
# installs podman, buildah and debootstrap if missing. See README, "Container image".
.PHONY: container-smoke
container-smoke: install
	bash container/smoke.sh
