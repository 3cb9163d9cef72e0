# The two commands (see README): `make serve` and `make test`. Both set everything up
# first: the virtualenv, the Docker engine (with gVisor's runsc), the runtime image.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup serve eval test lint bench protos
setup:
	@scripts/bootstrap.sh

serve: setup
	$(VENV)/bin/sandbox serve $(ARGS)

# make eval SAMPLES=path/to/samples.jsonl [ARGS="--k 1,10"]
eval: setup
	$(VENV)/bin/sandbox eval $(SAMPLES) $(ARGS)

test: setup
	$(VENV)/bin/pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check sandbox tests bench
	$(VENV)/bin/mypy sandbox

bench: setup
	$(PY) bench/run.py $(ARGS)

protos: setup
	PATH=$(VENV)/bin:$$PATH scripts/gen-protos.sh
