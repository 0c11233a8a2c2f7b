"""The state store: what each audience holds as far as audiencekit knows, who is writing to it,
and the runs in progress.

:class:`StateStore` is the contract (see :mod:`audiencekit.state.base`);
:class:`SqliteStateStore` is the embedded default, and what ``StateStore(path)`` opens;
``StateStore.open(location)`` also opens a PostgreSQL store from a ``postgresql://`` URL
(:class:`audiencekit.state.postgres.PostgresStateStore`, the ``postgres`` extra) for workers
on several hosts.
"""

from __future__ import annotations

from .base import ABSENT, STATUSES, Entry, Lease, StateStore, fingerprint, scope_of
from .sqlite import SqliteStateStore

__all__ = [
    "ABSENT",
    "STATUSES",
    "Entry",
    "Lease",
    "SqliteStateStore",
    "StateStore",
    "fingerprint",
    "scope_of",
]
