"""HTTP API blueprints: agent-facing, admin-facing and meta endpoints."""
