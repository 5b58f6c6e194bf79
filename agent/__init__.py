"""swarm-enroll agent: runs on every Pi and enrolls it into the swarm."""

__version__ = "0.1.0"
