"""The embedded state store: one SQLite file (or ``":memory:"``), no server."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from ..errors import (
    FencingError,
    StateStoreAccessError,
    StateStoreCorruptError,
    StateStoreError,
    StateStoreLockedError,
    StateStoreVersionError,
)
from .base import (
    LEASE_TTL,
    RUNS_LIMIT,
    Lease,
    RunOutcome,
    RunRecord,
    StateStore,
    alive,
    check_mark,
    check_outcomes,
    decode_attributes,
    encode_attributes,
    pick_run,
)

__all__ = ["SqliteStateStore"]

logger = logging.getLogger("audiencekit.state")

F = TypeVar("F", bound=Callable[..., Any])

#: The schema this code writes. 1: pushed (settled fingerprints) and checkpoints (audiencekit
#: 0.1, which did not set user_version); 2: every entry with its status and handle, and leases;
#: 3: scopes name the account (0.1's rows wait under "<provider>/0.1" for the first account
#: that opens them), leases carry an epoch; 4: the run history (runs, run_outcomes).
SCHEMA_VERSION = 4

#: The account part of a scope whose rows an audiencekit 0.1 store kept (it knew no accounts).
LEGACY_ACCOUNT = "0.1"

#: The tables of a state store: a file that has tables but none of these is someone else's.
_TABLES = {"pushed", "checkpoints", "leases"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushed (
    scope TEXT NOT NULL,
    audience TEXT NOT NULL,
    member TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'settled',
    handle TEXT,
    PRIMARY KEY (scope, audience, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    scope TEXT NOT NULL,
    audience TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    counts TEXT NOT NULL,
    error_type TEXT,
    parent TEXT,
    journalled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_scope ON runs (scope, started_at);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
CREATE TABLE IF NOT EXISTS run_outcomes (
    run TEXT NOT NULL,
    member TEXT NOT NULL,
    op TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    attributes TEXT,
    PRIMARY KEY (run, member)
) WITHOUT ROWID;
"""

#: Version 1 → 2: entries gain a status (all of version 1's are settled) and a handle.
_FROM_1 = """
ALTER TABLE pushed ADD COLUMN status TEXT NOT NULL DEFAULT 'settled';
ALTER TABLE pushed ADD COLUMN handle TEXT;
"""

#: Version 2 → 3: 0.1's scopes (a provider's name) wait for their account; leases are dropped
#: (a lease of 0.1 has no epoch, and its run cannot outlive the upgrade by much).
_FROM_2 = f"""
UPDATE pushed SET scope = scope || '/{LEGACY_ACCOUNT}' WHERE instr(scope, '/') = 0;
DROP TABLE IF EXISTS leases;
"""


def _upsert(status: str) -> str:
    return (
        "INSERT INTO pushed (scope, audience, member, fingerprint, status, handle) "
        f"VALUES (?, ?, ?, ?, '{status}', NULL) ON CONFLICT (scope, audience, member) DO UPDATE "
        f"SET fingerprint = excluded.fingerprint, status = '{status}', handle = NULL"
    )


_INTEND, _SETTLE = _upsert("intended"), _upsert("settled")

_HEADER = b"SQLite format 3\x00"

_RUN_COLUMNS = (
    "id, kind, provider, scope, audience, started_at, ended_at, outcome, counts, error_type, "
    "parent, journalled"
)


def _timestamp(value: datetime) -> str:
    """A UTC time as text of one width, so that text order is time order."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _run_row(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.id, record.kind, record.provider, record.scope, record.audience,
        _timestamp(record.started_at), _timestamp(record.ended_at), record.outcome,
        json.dumps(dict(record.counts), sort_keys=True), record.error_type, record.parent,
        int(record.journalled),
    )  # fmt: skip


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0], kind=row[1], provider=row[2], scope=row[3], audience=row[4],
        started_at=datetime.fromisoformat(row[5]), ended_at=datetime.fromisoformat(row[6]),
        outcome=row[7], counts=json.loads(row[8]), error_type=row[9], parent=row[10],
        journalled=bool(row[11]),
    )  # fmt: skip


#: Above any character an id holds: ``id >= prefix AND id < prefix + _LAST`` is "starts with".
_LAST = "\U0010ffff"


def _translated(method: F) -> F:
    """Raise what goes wrong in ``method`` as a StateStoreError naming the file, never as a
    raw sqlite3 error."""

    @functools.wraps(method)
    def call(self: SqliteStateStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    return call  # type: ignore[return-value]


class SqliteStateStore(StateStore):
    """The state store in one SQLite database (a file, or ``":memory:"``), no server.

    Every write is one transaction in WAL mode: a crash mid-write leaves the store as it was.
    Several processes may open one file; leases keep them from writing one audience at once.
    Safe to share between tasks and threads (one connection, one lock). ``timeout`` is how
    long a call waits for another process's transaction before it raises
    :class:`~audiencekit.errors.StateStoreLockedError`; ``lease_ttl`` how long a run's lease
    lasts unless renewed (a run renews it every third of that).

    A file that is not a state store (random bytes, a truncated file, another program's
    database) or one of a newer audiencekit is refused with a
    :class:`~audiencekit.errors.StateStoreError` and left untouched; an empty file is a new
    store, as SQLite has it. One of an older audiencekit is upgraded when opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        timeout: float = 30.0,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.lease_ttl = lease_ttl
        self._lock = threading.Lock()
        if self.path != ":memory:":
            self._inspect()
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=timeout
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            with self._lock:
                if self.path != ":memory:":
                    self._wal()
                self._db.execute("PRAGMA synchronous=NORMAL")
                with self._transaction():
                    self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from exc
        except StateStoreError:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"<SqliteStateStore {self.path}>"

    @property
    def location(self) -> str:
        return self.path

    # -- opening ----------------------------------------------------------------------------

    def _inspect(self) -> None:
        """Refuse, before SQLite writes anything, a path that cannot be a state store: a
        folder, a missing parent folder, a file that is not SQLite or is cut short, one whose
        schema is newer or someone else's (read through a read-only connection)."""
        path = self.path
        if os.path.isdir(path):
            raise StateStoreAccessError(path, "it is a folder, not a file")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StateStoreAccessError(path, f"the folder {folder} does not exist")
        try:
            with open(path, "rb") as file:
                header = file.read(100)
            size = os.path.getsize(path)
        except FileNotFoundError:
            return  # a new store
        except OSError as exc:
            raise StateStoreAccessError(path, exc.strerror or str(exc)) from exc
        if not header:
            return  # an empty file is an empty database, as SQLite has it
        if len(header) < 100 or not header.startswith(_HEADER):
            raise StateStoreCorruptError(path, "it is not a SQLite database")
        (page_size,) = struct.unpack(">H", header[16:18])
        page_size = 65536 if page_size == 1 else page_size
        (pages,) = struct.unpack(">I", header[28:32])
        wal = f"{path}-wal"  # a checkpoint cut short: the WAL still holds the missing pages
        in_wal = os.path.exists(wal) and os.path.getsize(wal) > 0
        if not in_wal and (size < page_size * pages or size % page_size):
            raise StateStoreCorruptError(
                path, f"it is cut short ({size:,} bytes of {page_size * pages:,})"
            )
        (version,) = struct.unpack(">I", header[60:64])  # PRAGMA user_version, as stored
        self._check_version(version)
        if version == 0:  # audiencekit 0.1 set no version: is it ours, or another program's?
            try:
                uri = "file:" + os.path.abspath(path).replace("?", "%3f").replace("#", "%23")
                reader = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=self.timeout)
                try:
                    tables = {row[0] for row in reader.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'")}  # fmt: skip
                finally:
                    reader.close()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            if tables and not tables & _TABLES:
                raise StateStoreCorruptError(path, "it is another program's database")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StateStoreVersionError(
                self.path,
                f"it was written by a newer audiencekit (schema {version}; this version reads "
                f"up to {SCHEMA_VERSION})",
            )

    def _error(self, exc: sqlite3.Error) -> StateStoreError:
        """The StateStoreError that says what ``exc`` means for this file."""
        text = str(exc)
        lowered = text.lower()
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return StateStoreCorruptError(self.path, f"it is damaged ({text})")
        if "locked" in lowered or "busy" in lowered:
            return StateStoreLockedError(
                self.path, f"another process held it locked for more than {self.timeout:g} s"
            )
        if "readonly" in lowered or "read-only" in lowered:
            return StateStoreAccessError(self.path, "it (or its folder) is read-only")
        if "unable to open" in lowered or "permission" in lowered or "full" in lowered:
            return StateStoreAccessError(self.path, text)
        return StateStoreError(self.path, text)

    def _wal(self) -> None:
        """Switch to WAL mode. SQLite answers "database is locked" at once, without waiting,
        while another process opens the same new file and switches it too: try again, for up
        to the store's timeout, as the busy timeout does for everything else."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            else:
                return
            time.sleep(0.01)

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pushed)")}
        if columns and "status" not in columns:  # version 1
            for statement in _FROM_1.strip().split(";\n"):
                self._db.execute(statement)
        if columns and version < 3:  # version 1 or 2: audiencekit 0.1
            for statement in _FROM_2.strip().split(";\n"):
                self._db.execute(statement)
        for statement in _SCHEMA.strip().split(";\n"):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @_translated
    def close(self) -> None:
        with self._lock:
            self._db.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self._db = db

        def __enter__(self) -> sqlite3.Connection:
            self._db.execute("BEGIN IMMEDIATE")
            return self._db

        def __exit__(self, exc_type: object, *rest: object) -> None:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")

    def _transaction(self) -> SqliteStateStore._Tx:
        """One transaction (call with the lock held): committed, or rolled back on error."""
        return SqliteStateStore._Tx(self._db)

    def _fenced(self, db: sqlite3.Connection, fence: Lease | None) -> None:
        """Raise FencingError (in the write's transaction, so nothing is written) unless
        ``fence`` is still held by its owner at its epoch."""
        if fence is None:
            return
        row = db.execute(
            "SELECT 1 FROM leases WHERE key = ? AND owner = ? AND epoch = ? AND expires > ?",
            (fence.key, fence.owner, fence.epoch, time.time()),
        ).fetchone()
        if row is None:
            raise FencingError(
                fence.key, f"the lease ran out or changed hands (this run held epoch {fence.epoch})"
            )

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]], fence: Lease | None) -> None:
        with self._lock, self._transaction() as db:
            self._fenced(db, fence)
            db.executemany(sql, rows)

    # -- the journal ----------------------------------------------------------------------------

    @_translated
    def entries_page(
        self, scope: str, audience: str, after: str | None, limit: int
    ) -> list[tuple[str, str, str, str | None]]:
        with self._lock:
            return self._db.execute(
                "SELECT member, fingerprint, status, handle FROM pushed WHERE scope = ? "
                "AND audience = ? AND member > ? ORDER BY member LIMIT ?",
                (scope, audience, "" if after is None else after, limit),
            ).fetchall()

    @_translated
    def unsettled(self, scope: str, audience: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return self._db.execute(
                "SELECT member, fingerprint, handle FROM pushed WHERE scope = ? AND audience = ? "
                "AND status != 'settled' AND handle IS NOT NULL ORDER BY member",
                (scope, audience),
            ).fetchall()

    @_translated
    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, fingerprint FROM pushed WHERE scope = ? AND audience = ? "
                "AND status = 'settled' AND fingerprint != ''",
                (scope, audience),
            ).fetchall()
        return dict(rows)

    @_translated
    def count(self, scope: str, audience: str) -> int:
        with self._lock:
            (found,) = self._db.execute(
                "SELECT count(*) FROM pushed WHERE scope = ? AND audience = ? "
                "AND status = 'settled' AND fingerprint != ''",
                (scope, audience),
            ).fetchone()
        return int(found)

    @_translated
    def intend(
        self,
        scope: str,
        audience: str,
        writes: Iterable[tuple[str, str]],
        *,
        fence: Lease | None = None,
    ) -> None:
        self._write(_INTEND, ((scope, audience, k, fp) for k, fp in writes), fence)

    @_translated
    def accept(
        self,
        scope: str,
        audience: str,
        handle: str,
        ids: Iterable[str],
        *,
        fence: Lease | None = None,
    ) -> None:
        self._write(
            "UPDATE pushed SET status = 'accepted', handle = ? WHERE scope = ? AND audience = ? "
            "AND member = ? AND status != 'settled'",
            ((handle, scope, audience, k) for k in ids),
            fence,
        )

    @_translated
    def mark(
        self,
        scope: str,
        audience: str,
        status: str,
        ids: Iterable[str],
        *,
        fence: Lease | None = None,
    ) -> None:
        check_mark(status)
        self._write(
            "UPDATE pushed SET status = ? WHERE scope = ? AND audience = ? AND member = ? "
            "AND status != 'settled'",
            ((status, scope, audience, k) for k in ids),
            fence,
        )

    @_translated
    def record(
        self,
        scope: str,
        audience: str,
        *,
        present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        absent: Iterable[str] = (),
        fence: Lease | None = None,
    ) -> None:
        items = present.items() if isinstance(present, Mapping) else present
        with self._lock, self._transaction() as db:
            self._fenced(db, fence)
            db.executemany(_SETTLE, ((scope, audience, k, fp) for k, fp in items))
            db.executemany(
                "DELETE FROM pushed WHERE scope = ? AND audience = ? AND member = ?",
                ((scope, audience, k) for k in absent),
            )

    @_translated
    def forget_audience(self, scope: str, audience: str, *, fence: Lease | None = None) -> None:
        self._write(
            "DELETE FROM pushed WHERE scope = ? AND audience = ?", [(scope, audience)], fence
        )

    @_translated
    def claim_legacy(self, provider: str, scope: str) -> int:
        legacy = f"{provider}/{LEGACY_ACCOUNT}"
        with self._lock, self._transaction() as db:
            moved = db.execute(
                "UPDATE pushed SET scope = ? WHERE scope = ?", (scope, legacy)
            ).rowcount
        if moved:
            logger.warning(
                "state store %s: %d entries written by audiencekit 0.1 for %s now belong to %s",
                self.path, moved, provider, scope,
            )  # fmt: skip
        return int(moved)

    # -- leases ---------------------------------------------------------------------------------

    @_translated
    def acquire_lease(self, key: str, owner: str, ttl: float) -> Lease:
        now = time.time()
        with self._lock, self._transaction() as db:
            row = db.execute(
                "SELECT owner, expires, epoch FROM leases WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now and alive(row[0]):
                return Lease(key, row[0], row[2], row[1] - now)
            epoch = 1 if row is None else row[2] + (row[0] != owner)
            db.execute(
                "INSERT INTO leases (key, owner, expires, epoch) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires, epoch = excluded.epoch",
                (key, owner, now + ttl, epoch),
            )
        return Lease(key, owner, epoch, ttl)

    @_translated
    def renew_lease(self, lease: Lease, ttl: float) -> bool:
        now = time.time()
        with self._lock, self._transaction() as db:
            changed = db.execute(
                "UPDATE leases SET expires = ? WHERE key = ? AND owner = ? AND epoch = ? "
                "AND expires > ?",
                (now + ttl, lease.key, lease.owner, lease.epoch, now),
            ).rowcount
        return changed == 1

    @_translated
    def release_lease(self, lease: Lease) -> None:
        self._write(
            # Kept, expired, so that the next owner's epoch is higher still.
            "UPDATE leases SET expires = 0 WHERE key = ? AND owner = ? AND epoch = ?",
            [(lease.key, lease.owner, lease.epoch)],
            None,
        )

    # -- run history ----------------------------------------------------------------------------

    @_translated
    def record_run(
        self, record: RunRecord, outcomes: Iterable[RunOutcome | tuple[Any, ...]] = ()
    ) -> None:
        rows = check_outcomes(outcomes)
        with self._lock, self._transaction() as db:
            db.execute("DELETE FROM run_outcomes WHERE run = ?", (record.id,))
            db.execute(
                f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _run_row(record),
            )
            db.executemany(
                "INSERT INTO run_outcomes (run, member, op, status, reason, attributes) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((record.id, o.id, o.op, o.status, o.reason, encode_attributes(o.attributes))
                 for o in rows.values()),
            )  # fmt: skip

    @_translated
    def runs(
        self, scope: str | None = None, *, audience: str | None = None, limit: int = RUNS_LIMIT
    ) -> list[RunRecord]:
        where = " AND ".join(
            clause
            for clause, value in (("scope = ?", scope), ("audience = ?", audience))
            if value is not None
        )
        params = [value for value in (scope, audience) if value is not None]
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs {'WHERE ' + where if where else ''} "
                "ORDER BY started_at DESC, id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [_run_record(row) for row in rows]

    @_translated
    def run(self, run_id: str, *, scope: str | None = None) -> RunRecord | None:
        if not run_id:
            return None
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id >= ? AND id < ? "
                f"{'AND scope = ?' if scope is not None else ''} ORDER BY id LIMIT 10",
                (run_id, run_id + _LAST, *(() if scope is None else (scope,))),
            ).fetchall()
        return pick_run(run_id, [_run_record(row) for row in rows])

    @_translated
    def run_outcomes_page(self, run_id: str, after: str | None, limit: int) -> list[RunOutcome]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, op, status, reason, attributes FROM run_outcomes "
                "WHERE run = ? AND member > ? ORDER BY member LIMIT ?",
                (run_id, "" if after is None else after, limit),
            ).fetchall()
        return [RunOutcome(k, op, st, why, decode_attributes(at)) for k, op, st, why, at in rows]

    # -- checkpoints ----------------------------------------------------------------------------

    @_translated
    def checkpoint(self, run: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM checkpoints WHERE run = ?", (run,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    @_translated
    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        self._write(
            "INSERT INTO checkpoints (run, data) VALUES (?, ?) ON CONFLICT (run) "
            "DO UPDATE SET data = excluded.data, updated = CURRENT_TIMESTAMP",
            [(run, json.dumps(data, separators=(",", ":")))],
            None,
        )

    @_translated
    def clear_checkpoint(self, run: str) -> None:
        self._write("DELETE FROM checkpoints WHERE run = ?", [(run,)], None)
