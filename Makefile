# swarm-enroll: every target installs what it needs on a fresh Debian 12 (as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cloud-init: `cloud-init schema` for the flash tests (installing it starts nothing here;
# the deps target then disables it, so that it never runs at a boot of this machine);
# systemd: `systemd-analyze verify` for the unit tests (PID 1 is not touched);
# debootstrap, systemd-container: the lab Pis that boot a flashed card (a Debian root
# under systemd-nspawn);
# avahi-daemon, avahi-utils, dbus: a real avahi in a lab Pi (tests/deploy/test_avahi.py).
# It must never run on this host's own interfaces: nothing may start it while apt
# installs it (a policy-rc.d of ours, unless one is there), and it is disabled after.
APT_PACKAGES := docker.io iproute2 busybox-static iptables procps util-linux python3-venv \
	cloud-init systemd debootstrap systemd-container avahi-daemon avahi-utils dbus
CLUSTER ?= deploy/lab/cluster.toml
DIST ?= dist

.PHONY: help deps venv demo demo-down demo-soak test test-cards lint bench dist wheelhouse clean

help:
	@echo "make demo       build the simulated 8-Pi cluster and watch it enroll itself"
	@echo "make demo-down  remove the lab: daemons, namespaces, mounts"
	@echo "make test       run the test suite (unit + lab, one card journey)"
	@echo "make test-cards the other lab Pis booting flashed cards (manager, controller, reboots)"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks in their own lab -> tests/bench/results/latest.{json,md}"
	@echo "make demo-soak  the demo 20 times from down -> tests/bench/results/soak.json"
	@echo "make dist       build the wheel and sdist into dist/ (DIST=dir to change)"
	@echo "make wheelhouse the dependencies' wheels for this machine's architecture"

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  ours=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; ours=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  status=$$?; [ -z "$$ours" ] || rm -f /usr/sbin/policy-rc.d; \
	  case " $$missing " in *" cloud-init "*) \
	    mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled;; \
	  esac; \
	  case " $$missing " in *" avahi-daemon "*) \
	    systemctl disable avahi-daemon.service avahi-daemon.socket >/dev/null 2>&1 || true;; \
	  esac; \
	  [ "$$status" = 0 ] || exit "$$status"; \
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

# The demo SOAK_RUNS times in a row, each from `down` (replaces a running demo lab).
SOAK_RUNS ?= 20
demo-soak: deps venv
	$(BIN)/python -m tests.bench.soak --runs $(SOAK_RUNS)

# The test lab's tests run one after another (they share its Pis); the others run beside
# them in a second pytest, whose report follows (ended with the recipe if it is
# interrupted): pure logic and servers on loopback, then the bench smoke in a lab of its
# own (prefix, subnet, state dir). PYTEST_ARGS="..." runs one pytest with those instead.
LAB_TESTS = tests/e2e tests/deploy tests/cards
BESIDE_TESTS = tests/unit tests/attacks tests/bench_smoke
PYTEST = $(BIN)/python -m pytest -q -ra
test: deps venv
	$(BIN)/enroll-lab down
	$(BIN)/enroll-lab rootfs
ifneq ($(strip $(PYTEST_ARGS)),)
	$(PYTEST) --durations=30 -m "not cards" $(PYTEST_ARGS)
else
	@log=$$(mktemp) || exit 1; \
	$(PYTEST) -p no:cacheprovider $(BESIDE_TESTS) >$$log 2>&1 & beside=$$!; \
	trap 'kill $$beside 2>/dev/null; rm -f $$log; exit 130' INT TERM; \
	$(PYTEST) --durations=30 -m "not cards" $(LAB_TESTS); lab=$$?; \
	wait $$beside; rc=$$?; trap - INT TERM; \
	echo "== $(BESIDE_TESTS), run beside the lab's tests:"; cat $$log; rm -f $$log; \
	test $$lab -eq 0 && test $$rc -eq 0
endif

# The card Pis `make test` leaves out (it runs one card journey): see README, The lab.
test-cards: deps venv
	$(BIN)/enroll-lab down
	$(BIN)/enroll-lab rootfs
	$(PYTEST) -m cards tests/cards $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check agent controller deploy tests

# The sdist, then the wheel built from it (so the sdist is known to be complete).
dist: venv
	rm -f $(DIST)/swarm_enroll-*.whl $(DIST)/swarm_enroll-*.tar.gz
	$(BIN)/python -m build --outdir $(DIST) .

# For `enrollctl flash --wheelhouse`: a Pi with no Internet access installs offline.
# Built for this machine's architecture and Python; for a Pi, run it on a Pi (or use
# `pip download --platform ...`).
wheelhouse: dist
	$(BIN)/pip wheel --quiet --wheel-dir $(DIST)/wheelhouse \
	  "$$(ls $(DIST)/swarm_enroll-*.whl)[controller]"
	rm -f $(DIST)/wheelhouse/swarm_enroll-*.whl

clean: demo-down
	rm -rf $(VENV) build dist *.egg-info

# Benchmarks (issue 6) in their own lab (prefix sebench-, 198.18.1.0/24), never the demo's.
# BENCH_ARGS: e.g. "--storm-n 100,1000 --storm-reps 2", "--try-proposals"; see --help.
BENCH_ARGS ?=
bench: deps venv
	$(BIN)/python -m tests.bench $(BENCH_ARGS)
