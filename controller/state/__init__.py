"""The cluster state: documents changed under their version, in memory and in a backend."""

from controller.state.backend import Backend, Conflict, Stored, StoreUnavailable
from controller.state.model import (
    APPROVED,
    ARCHIVED,
    FORGOTTEN,
    JOINED,
    NODE_FILTERS,
    OPEN,
    PENDING,
    PRUNED,
    REJECTED,
    REPLACED,
    REVOKED,
    Event,
    HostDoc,
    Record,
    Token,
    new_id,
)
from controller.state.state import State, Unchanged

__all__ = [
    "APPROVED", "ARCHIVED", "FORGOTTEN", "JOINED", "NODE_FILTERS", "OPEN", "PENDING", "PRUNED",
    "REJECTED", "REPLACED", "REVOKED", "Backend", "Conflict", "Event", "HostDoc", "Record",
    "State", "StoreUnavailable", "Stored", "Token", "Unchanged", "new_id",
]
