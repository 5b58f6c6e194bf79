"""Baseline services: the services every cluster runs, declared in a stack-file subset.

spec.py parses and validates the file, desired.py turns it into Docker service specs for
the nodes the swarm has now (pure), reconcile.py makes the swarm match, health.py reports
on the cluster.
"""
