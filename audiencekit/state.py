"""The state store: what was pushed where, and checkpoints of runs in progress.

SQLite (a file, or ``":memory:"``), no server. Every write is one transaction in WAL mode, so a
crash mid-write leaves the store as it was before that write, never half-written.

Two things live here:

- *pushed members*: for each provider audience (a ``scope`` such as ``"batch"`` plus the audience
  id), each member id and a fingerprint of the attributes last applied. ``sync`` diffs against it
  for providers that cannot list their members (Batch).
- *checkpoints*: a JSON document per run id (``migrate`` keeps its cursor, its pending indexing
  tokens and its counts there), replaced as the run moves on, removed when it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .models import Attributes, Url

__all__ = ["StateStore", "fingerprint"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushed (
    scope TEXT NOT NULL,
    audience TEXT NOT NULL,
    member TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (scope, audience, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
"""


def _plain(value: object) -> object:
    # A Url is a str, but not the same attribute as the str: tag the typed values.
    if isinstance(value, Url):
        return {"url": str(value)}
    if isinstance(value, datetime):
        return {"date": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def fingerprint(attributes: Attributes) -> str:
    """A short, stable digest of a member's attributes (order of keys does not matter)."""
    plain = {name: _plain(value) for name, value in attributes.items()}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class StateStore:
    """What audiencekit remembers between runs, in one SQLite database.

    Safe to share between tasks and threads (one connection, one lock). Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"<StateStore {self.path}>"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- pushed members -------------------------------------------------------------------------

    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        """Member id → fingerprint of what was last applied to this audience."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member, fingerprint FROM pushed WHERE scope = ? AND audience = ?",
                (scope, audience),
            ).fetchall()
        return dict(rows)

    def count(self, scope: str, audience: str) -> int:
        """How many members the store holds for this audience."""
        with self._lock:
            (found,) = self._db.execute(
                "SELECT count(*) FROM pushed WHERE scope = ? AND audience = ?", (scope, audience)
            ).fetchone()
        return int(found)

    def record(
        self,
        scope: str,
        audience: str,
        *,
        present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        absent: Iterable[str] = (),
    ) -> None:
        """Record members now ``present`` (id → fingerprint) and ids now ``absent``, at once."""
        items = present.items() if isinstance(present, Mapping) else present
        rows: list[tuple[Any, ...]] = [(scope, audience, k, fp) for k, fp in items]
        gone = [(scope, audience, k) for k in absent]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO pushed VALUES (?, ?, ?, ?) ON CONFLICT (scope, audience, member) "
                    "DO UPDATE SET fingerprint = excluded.fingerprint",
                    rows,
                )
                self._db.executemany(
                    "DELETE FROM pushed WHERE scope = ? AND audience = ? AND member = ?", gone
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def forget_audience(self, scope: str, audience: str) -> None:
        """Drop everything recorded for an audience (after deleting it, say)."""
        self._write("DELETE FROM pushed WHERE scope = ? AND audience = ?", [(scope, audience)])

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, run: str) -> dict[str, Any] | None:
        """The saved state of run ``run``, or None."""
        with self._lock:
            row = self._db.execute("SELECT data FROM checkpoints WHERE run = ?", (run,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        """Replace the saved state of ``run`` (atomically)."""
        text = json.dumps(data, separators=(",", ":"))
        self._write(
            "INSERT INTO checkpoints (run, data) VALUES (?, ?) ON CONFLICT (run) "
            "DO UPDATE SET data = excluded.data, updated = CURRENT_TIMESTAMP",
            [(run, text)],
        )

    def clear_checkpoint(self, run: str) -> None:
        self._write("DELETE FROM checkpoints WHERE run = ?", [(run,)])
