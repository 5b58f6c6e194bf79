"""The read-only, filtered Docker API that the baseline's visualizer gets instead of
the Docker socket (README: Security)."""
