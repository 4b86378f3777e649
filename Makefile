# The two quickstart commands: `make pipeline` and `make test`. Both install what is needed
# into .venv first (once, and again whenever requirements.txt changes).
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: install pipeline test lint serve

# requirements.txt is a lock (see requirements.in and `make lock`): every package with its hashes,
# so pip installs exactly those files and resolves nothing (--no-deps); pip check proves the
# lock's tree complete.
$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--require-hashes --no-deps -r requirements.txt
	$(BIN)/python -m pip check --disable-pip-version-check >/dev/null
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
# pipeline fixture) on one worker; --no-loadscope-reorder keeps the order tests/conftest.py sets
# (the longest modules first, so that no worker is left alone with one at the end). `make test`
# runs every test, with line coverage of satpipe, serve and stages (the code run in pytest's
# processes: pyproject.toml, [tool.coverage.*]); tests/coverage_report.py then prints it per
# subpackage and fails when one is below its floor.
PYTEST_XDIST := -n auto --dist loadfile --no-loadscope-reorder
.PHONY: test-fast
test: lock-check lint airflow browser
	python -m pytest $(PYTEST_XDIST) --cov --cov-report= --durations=10
	python tests/coverage_report.py

# The inner loop (about a minute): pytest alone on the tests not marked `slow`, none of which runs
# the pipeline (no dvc repro); no coverage, no lock-check, no lint (`make lint`).
test-fast: install
	python -m pytest $(PYTEST_XDIST) -m "not slow"

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
		--require-hashes --no-deps -r orchestration/requirements.txt
	$(AIRFLOW_VENV)/bin/python -m pip check --disable-pip-version-check >/dev/null
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

# The locks, each made from its input by uv (pinned in requirements.in; installs need only pip):
# requirements.txt from requirements.in, orchestration/requirements.txt from
# orchestration/requirements.in, and container/requirements.txt, the image's, from
# container/requirements.in with requirements.txt as its constraints (the same versions). Every
# package of the tree is pinned, with the sha256 of each of its files on the index. For CPython 3.11
# on x86_64 Linux with glibc 2.36 (Debian bookworm: this machine, CI and the image). `make lock`
# keeps the pins that still fit their input (uv prefers the output file's own); `make
# lock-upgrade` (or UPGRADE=1) moves the others to the newest that fit.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command 'make lock'
.PHONY: lock lock-upgrade lock-check

lock: install
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) requirements.in -o requirements.txt
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) orchestration/requirements.in \
		-o orchestration/requirements.txt
	$(UV_COMPILE) container/requirements.in -c requirements.txt -o container/requirements.txt

lock-upgrade:
	$(MAKE) lock UPGRADE=1

# Fails, naming the lock, when a lock is not what `make lock` makes of its input now: each input is
# compiled again with its lock as the preferred pins, and the result must be the same, pins and
# `# via` lines, less the hash lines (an index may add a file to a release). New releases upstream
# change nothing here. Then every pin of the image's lock must be one of requirements.txt's.
LOCK_PINS = sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^ ;\\]*\).*/\1/p'
define lock_check
cp $(2) $$tmp/lock.txt && \
if ! $(UV_COMPILE) $(3) $(1) -o $$tmp/lock.txt >/dev/null 2>$$tmp/err; then \
	cat $$tmp/err >&2; echo "lock-check: $(2): uv pip compile $(1) failed" >&2; exit 1; fi && \
grep -v -e '--hash=' $(2) >$$tmp/have; grep -v -e '--hash=' $$tmp/lock.txt >$$tmp/want; \
if ! cmp -s $$tmp/have $$tmp/want; then \
	diff $$tmp/have $$tmp/want | sed -n -e 's/^< /  lock:  /p' -e 's/^> /  input: /p' >&2; \
	echo "lock-check: $(2) does not match $(1): run make lock" >&2; exit 1; fi
endef

lock-check: install
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(call lock_check,requirements.in,requirements.txt) && \
	$(call lock_check,orchestration/requirements.in,orchestration/requirements.txt) && \
	$(call lock_check,container/requirements.in,container/requirements.txt,-c requirements.txt) && \
	$(LOCK_PINS) requirements.txt | sort >$$tmp/main && \
	$(LOCK_PINS) container/requirements.txt | sort | comm -23 - $$tmp/main >$$tmp/extra && \
	if [ -s $$tmp/extra ]; then sed 's/^/  /' $$tmp/extra >&2; \
		echo "lock-check: container/requirements.txt pins what requirements.txt does not: run make lock" >&2; \
		exit 1; fi

# Builds the service image (Dockerfile) and checks it serves a pipeline run; as root, it
# installs podman, buildah and debootstrap if missing. See README, "Container image".
.PHONY: container-smoke
container-smoke: install
	bash container/smoke.sh
