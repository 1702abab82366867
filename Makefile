# Two commands do all set-up on a fresh Debian 12 machine: `make run` and `make test`.
SHELL := /bin/bash
# Nothing a root process runs may write into the checkout: no bytecode next to the sources.
export PYTHONDONTWRITEBYTECODE := 1
VENV := .venv
# Debian's own python3: world-readable, so sandboxed tasks (an unprivileged uid) can load it.
SYSTEM_PYTHON := /usr/bin/python3
STAMPS := .stamps
DATA_DIR ?= $(or $(APPLIANCE_DATA_DIR),./var)
MANIM_KODISC := 1.1.5

.PHONY: run test lint bench fuzz install apt doctor clean install-service conformance example-media

run: install
	@$(VENV)/bin/appliance init --data-dir $(DATA_DIR)
	@$(VENV)/bin/appliance serve --data-dir $(DATA_DIR)

test: install lint
	$(VENV)/bin/pytest

# Static checks, part of `make test`: ruff (ruff.toml) and mypy with --check-untyped-defs (mypy.ini).
lint: install
	$(VENV)/bin/ruff check appliance renderers tests scripts
	$(VENV)/bin/mypy appliance renderers

# The examples' media (examples/media/, committed): scripts/make-example-media.py makes them again.
example-media: install
	$(VENV)/bin/python scripts/make-example-media.py

# Every scene and Movie document of the conformance suites against the references (the manim CLI; an oracle
# computed from each document); `make test` runs a fast subset of each.
conformance: install
	$(VENV)/bin/pytest -m conformance tests/conformance tests/integration/test_movie_conformance.py

bench: install $(STAMPS)/bench
	$(VENV)/bin/python -m tests.bench.run

# Schemathesis against a real server on a free port with a fresh data dir (scripts/fuzz.py); not part of `make test`.
fuzz: install $(STAMPS)/fuzz
	$(VENV)/bin/python scripts/fuzz.py

$(STAMPS)/fuzz: $(STAMPS)/venv pyproject.toml
	$(VENV)/bin/pip install -q -e '.[test,fuzz]'
	@touch $@

doctor: install
	$(VENV)/bin/appliance doctor --data-dir $(DATA_DIR)

install: apt $(STAMPS)/venv

# As root: the appliance as two hardened systemd services (a system user `appliance`, /var/lib/appliance, the
# unprivileged server and the root sandbox launcher; README "Install as a service"). `install` above is the deps.
install-service: install
	$(VENV)/bin/appliance install

apt:
	@scripts/install-apt.sh

# Kodisc's Manim plugin: scenes written for the hosted service do `from manim_kodisc import *`. Its metadata pins
# pillow<10 (the project uses 13), so it goes in without its dependencies, after the project and only if missing;
# what it imports (manim, numpy, scipy, PIL, requests) comes from pyproject.toml.
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,models]'
	@$(VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("manim-kodisc") != "$(MANIM_KODISC)")' \
		2>/dev/null || $(VENV)/bin/pip install -q --no-deps 'manim-kodisc==$(MANIM_KODISC)'
	@touch $@

# The bench's MoviePy 2 reference gets a venv of its own: MoviePy pins pillow<12 and the project uses pillow 13, so
# the `bench` extra of pyproject.toml is installed into $(MOVIEPY_VENV), never into $(VENV).
MOVIEPY_VENV := .venv-moviepy
$(STAMPS)/bench: $(STAMPS)/venv pyproject.toml
	@test -x $(MOVIEPY_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(MOVIEPY_VENV)
	$(MOVIEPY_VENV)/bin/pip install -q --upgrade pip
	set -o pipefail; $(SYSTEM_PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"], sep="\n")' \
		| $(MOVIEPY_VENV)/bin/pip install -q -r /dev/stdin
	@touch $@

clean:
	rm -rf $(VENV) .venv-moviepy $(STAMPS)
