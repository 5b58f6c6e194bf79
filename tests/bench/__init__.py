"""Benchmarks of swarm-enroll (issue 6): join overhead, enrollment storm, footprint, profile.

Run with `make bench` or `python -m tests.bench --help`. Every benchmark uses its own lab
(state dir /var/lib/swarm-enroll-bench, prefix `sebench-`, subnet 198.18.1.0/24), never the
default `selab-` lab that `make demo` and the e2e tests use.
"""
