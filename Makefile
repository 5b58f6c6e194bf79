# swarm-enroll: every target installs what it needs on a fresh Debian 12 (as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := docker.io iproute2 busybox-static iptables procps util-linux python3-venv
CLUSTER ?= deploy/lab/cluster.toml

.PHONY: help deps venv demo demo-down test lint bench dist clean

help:
	@echo "make demo       build the simulated 8-Pi cluster and watch it enroll itself"
	@echo "make demo-down  remove the lab: daemons, namespaces, mounts"
	@echo "make test       run the whole test suite (unit + lab)"
	@echo "make lint       ruff"

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: deps venv
	$(BIN)/enroll-lab demo --config $(CLUSTER)

demo-down: venv
	$(BIN)/enroll-lab down

test: deps venv
	$(BIN)/enroll-lab down
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check agent controller deploy tests

clean: demo-down
	rm -rf $(VENV) build dist *.egg-info
