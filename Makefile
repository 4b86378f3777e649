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

test: lint
	python -m pytest

serve: install
	SATPIPE_REPO=. uvicorn serve.app:create_app --factory --host 127.0.0.1 --port 8000
