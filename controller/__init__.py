"""swarm-enroll controller: approves Pis and lets them join the swarm."""
