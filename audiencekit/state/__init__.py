"""The state store: what each audience holds as far as audiencekit knows, who is writing to it,
the runs in progress, and the history of past runs (:class:`RunRecord`, :class:`RunOutcome`).

:class:`StateStore` is the contract (see :mod:`audiencekit.state.base`);
:class:`SqliteStateStore` is the embedded default, and what ``StateStore(path)`` opens;
``StateStore.open(location)`` also opens a PostgreSQL store from a ``postgresql://`` URL
(:class:`audiencekit.state.postgres.PostgresStateStore`, the ``postgres`` extra) for workers
on several hosts.
"""

from __future__ import annotations

from .base import (
    ABSENT,
    RUN_KINDS,
    RUN_OUTCOMES,
    STATUSES,
    Entry,
    Lease,
    RunOutcome,
    RunRecord,
    StateStore,
    fingerprint,
    new_run_id,
    scope_of,
)
from .sqlite import SqliteStateStore

__all__ = [
    "ABSENT",
    "RUN_KINDS",
    "RUN_OUTCOMES",
    "STATUSES",
    "Entry",
    "Lease",
    "RunOutcome",
    "RunRecord",
    "SqliteStateStore",
    "StateStore",
    "fingerprint",
    "new_run_id",
    "scope_of",
]
