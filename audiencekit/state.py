"""The state store: what each audience holds as far as audiencekit knows, who is writing to it,
and the runs in progress.

:class:`StateStore` is the interface (a few blocking methods, each one transaction; the library
calls them from a worker thread, never on the event loop). :class:`SqliteStateStore` is the
embedded implementation, and what ``StateStore(path)`` opens. A server-backed store (for
workers on several machines) implements the same methods with the same guarantees:

- **the journal**: per (scope, audience, member id) the fingerprint of the attributes last
  written and where that write stands: ``intended`` (about to be sent), ``accepted`` (under a
  handle), ``unknown`` or ``failed`` (no confirmation), or ``settled`` (the provider confirmed
  it). An id without an entry is absent. A run marks what it is about to send before sending
  it, notes each handle as the provider accepts it, and settles entries as writes are
  confirmed, so a crash at any point leaves a store from which the next run converges: an
  unsettled id may be present, and is written again (or removed).
- **leases**: one writer per audience across processes: :meth:`StateStore.acquire_lease`
  takes a key for ``ttl`` seconds unless another owner holds it (a dead process's lease
  expires; on this host it is taken over at once).
- **checkpoints**: a small JSON document per run id, for the runs that need one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import attrs

from .errors import ConfigurationError
from .models import Attributes, Url

__all__ = ["Entry", "LeaseHolder", "SqliteStateStore", "StateStore", "fingerprint"]

#: A fingerprint that stands for "absent": an entry with it is an intended removal.
ABSENT = ""


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


#: Where a journalled write stands. Every status but "settled" means "may or may not be held".
STATUSES = ("intended", "accepted", "unknown", "failed", "settled")


class Entry(NamedTuple):
    """What the store knows of one member: the fingerprint last written (``""`` for a removal),
    where that write stands (one of :data:`STATUSES`), and the handle it was accepted under.

    A tuple of strings: a store of 200,000 entries adds nothing for the garbage collector to walk.
    """

    fingerprint: str
    status: str
    handle: str | None = None

    @property
    def settled(self) -> bool:
        """Whether the provider confirmed the write."""
        return self.status == "settled"


@attrs.frozen
class LeaseHolder:
    """Who holds a lease: ``owner`` (host, process id and a token) and seconds left on it."""

    owner: str
    expires_in: float


class StateStore:
    """What audiencekit remembers between runs (see the module's documentation).

    ``StateStore(path)`` opens a :class:`SqliteStateStore` (as ``pathlib.Path`` opens a
    ``PosixPath``); other stores subclass this class and implement every method that raises
    NotImplementedError here. Use a store as a context manager, or call :meth:`close`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> StateStore:
        if cls is StateStore:
            return super().__new__(SqliteStateStore)
        return super().__new__(cls)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's resources."""

    # -- the journal ----------------------------------------------------------------------------

    def entries(self, scope: str, audience: str) -> dict[str, Entry]:
        """Every entry of an audience: member id → :class:`Entry`."""
        raise NotImplementedError

    def intend(self, scope: str, audience: str, writes: Iterable[tuple[str, str]]) -> None:
        """Mark ``(member id, fingerprint)`` writes as about to be sent (``""``: a removal):
        unsettled, with no handle, whatever the entry said before."""
        raise NotImplementedError

    def accept(self, scope: str, audience: str, handle: str, ids: Iterable[str]) -> None:
        """Note the handle under which the provider accepted the writes of ``ids`` (status
        ``accepted``; entries already settled are left alone)."""
        raise NotImplementedError

    def mark(self, scope: str, audience: str, status: str, ids: Iterable[str]) -> None:
        """Note that the writes of ``ids`` ended ``unknown`` or ``failed`` (unconfirmed);
        entries already settled are left alone."""
        raise NotImplementedError

    def record(
        self,
        scope: str,
        audience: str,
        *,
        present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        absent: Iterable[str] = (),
    ) -> None:
        """Settle: members now ``present`` (id → fingerprint) and ids now ``absent``."""
        raise NotImplementedError

    def forget_audience(self, scope: str, audience: str) -> None:
        """Drop every entry of an audience (after deleting it, say)."""
        raise NotImplementedError

    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        """Member id → fingerprint of the members the provider is known to hold (settled)."""
        return {
            k: e.fingerprint
            for k, e in self.entries(scope, audience).items()
            if e.settled and e.fingerprint != ABSENT
        }

    def count(self, scope: str, audience: str) -> int:
        """How many members the provider is known to hold (settled entries)."""
        return len(self.pushed(scope, audience))

    # -- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, key: str, owner: str, ttl: float) -> LeaseHolder | None:
        """Take ``key`` for ``ttl`` seconds: None when taken (or renewed, for the same owner),
        else who holds it. An expired lease, or one a dead process holds, is taken over."""
        raise NotImplementedError

    def renew_lease(self, key: str, owner: str, ttl: float) -> bool:
        """Extend the lease ``owner`` holds; False when it no longer holds it."""
        raise NotImplementedError

    def release_lease(self, key: str, owner: str) -> None:
        """Give the lease up (nothing happens when ``owner`` does not hold it)."""
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, run: str) -> dict[str, Any] | None:
        """The saved state of run ``run``, or None."""
        raise NotImplementedError

    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        """Replace the saved state of ``run`` (atomically)."""
        raise NotImplementedError

    def clear_checkpoint(self, run: str) -> None:
        """Forget run ``run``."""
        raise NotImplementedError


#: The schema this code writes. 1: pushed (settled fingerprints) and checkpoints (audiencekit
#: 0.1, which did not set user_version); 2: every entry with its status and handle, and leases.
SCHEMA_VERSION = 2

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
    expires REAL NOT NULL
);
"""

#: Version 1 → 2: entries gain a status (all of version 1's are settled) and a handle; leases.
_FROM_1 = """
ALTER TABLE pushed ADD COLUMN status TEXT NOT NULL DEFAULT 'settled';
ALTER TABLE pushed ADD COLUMN handle TEXT;
"""


def _upsert(status: str) -> str:
    return (
        "INSERT INTO pushed (scope, audience, member, fingerprint, status, handle) "
        f"VALUES (?, ?, ?, ?, '{status}', NULL) ON CONFLICT (scope, audience, member) DO UPDATE "
        f"SET fingerprint = excluded.fingerprint, status = '{status}', handle = NULL"
    )


_INTEND, _SETTLE = _upsert("intended"), _upsert("settled")


class SqliteStateStore(StateStore):
    """The state store in one SQLite database (a file, or ``":memory:"``), no server.

    Every write is one transaction in WAL mode: a crash mid-write leaves the store as it was.
    Several processes may open one file; leases keep them from writing one audience at once.
    Safe to share between tasks and threads (one connection, one lock). The schema carries its
    version (``PRAGMA user_version``); a file of an older audiencekit is migrated when opened,
    one of a newer one is refused.
    """

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        with self._lock:
            if self.path != ":memory:":
                self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                self._migrate()

    def _wal(self, timeout: float = 30.0) -> None:
        """Switch to WAL mode. SQLite answers "database is locked" at once, without waiting,
        while another process opens the same new file and switches it too: try again, for up
        to ``timeout`` seconds, as the busy timeout does for everything else."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            else:
                return
            time.sleep(0.01)

    def __repr__(self) -> str:
        return f"<SqliteStateStore {self.path}>"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the state store {self.path!r} was written by a newer audiencekit (schema "
                f"{version}; this one reads up to {SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(pushed)")}
        if columns and "status" not in columns:  # version 1
            for statement in _FROM_1.strip().split(";\n"):
                self._db.execute(statement)
        for statement in _SCHEMA.strip().split(";\n"):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self._lock, self._transaction() as db:
            db.executemany(sql, rows)

    # -- the journal ----------------------------------------------------------------------------

    def entries(self, scope: str, audience: str) -> dict[str, Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, fingerprint, status, handle FROM pushed "
                "WHERE scope = ? AND audience = ?",
                (scope, audience),
            ).fetchall()
        return {member: Entry(fp, status, handle) for member, fp, status, handle in rows}

    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT member, fingerprint FROM pushed WHERE scope = ? AND audience = ? "
                "AND status = 'settled' AND fingerprint != ''",
                (scope, audience),
            ).fetchall()
        return dict(rows)

    def count(self, scope: str, audience: str) -> int:
        with self._lock:
            (found,) = self._db.execute(
                "SELECT count(*) FROM pushed WHERE scope = ? AND audience = ? "
                "AND status = 'settled' AND fingerprint != ''",
                (scope, audience),
            ).fetchone()
        return int(found)

    def intend(self, scope: str, audience: str, writes: Iterable[tuple[str, str]]) -> None:
        self._write(_INTEND, ((scope, audience, k, fp) for k, fp in writes))

    def accept(self, scope: str, audience: str, handle: str, ids: Iterable[str]) -> None:
        self._write(
            "UPDATE pushed SET status = 'accepted', handle = ? WHERE scope = ? AND audience = ? "
            "AND member = ? AND status != 'settled'",
            ((handle, scope, audience, k) for k in ids),
        )

    def mark(self, scope: str, audience: str, status: str, ids: Iterable[str]) -> None:
        if status not in ("unknown", "failed"):
            raise ValueError(f"mark() takes 'unknown' or 'failed', not {status!r}")
        self._write(
            "UPDATE pushed SET status = ? WHERE scope = ? AND audience = ? AND member = ? "
            "AND status != 'settled'",
            ((status, scope, audience, k) for k in ids),
        )

    def record(
        self,
        scope: str,
        audience: str,
        *,
        present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        absent: Iterable[str] = (),
    ) -> None:
        items = present.items() if isinstance(present, Mapping) else present
        with self._lock, self._transaction() as db:
            db.executemany(_SETTLE, ((scope, audience, k, fp) for k, fp in items))
            db.executemany(
                "DELETE FROM pushed WHERE scope = ? AND audience = ? AND member = ?",
                ((scope, audience, k) for k in absent),
            )

    def forget_audience(self, scope: str, audience: str) -> None:
        self._write("DELETE FROM pushed WHERE scope = ? AND audience = ?", [(scope, audience)])

    # -- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, key: str, owner: str, ttl: float) -> LeaseHolder | None:
        now = time.time()
        with self._lock, self._transaction() as db:
            row = db.execute("SELECT owner, expires FROM leases WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now and _alive(row[0]):
                return LeaseHolder(owner=row[0], expires_in=row[1] - now)
            db.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "owner = excluded.owner, expires = excluded.expires",
                (key, owner, now + ttl),
            )
        return None

    def renew_lease(self, key: str, owner: str, ttl: float) -> bool:
        with self._lock, self._transaction() as db:
            changed = db.execute(
                "UPDATE leases SET expires = ? WHERE key = ? AND owner = ?",
                (time.time() + ttl, key, owner),
            ).rowcount
        return changed == 1

    def release_lease(self, key: str, owner: str) -> None:
        self._write("DELETE FROM leases WHERE key = ? AND owner = ?", [(key, owner)])

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, run: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM checkpoints WHERE run = ?", (run,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":"))
        self._write(
            "INSERT INTO checkpoints (run, data) VALUES (?, ?) ON CONFLICT (run) "
            "DO UPDATE SET data = excluded.data, updated = CURRENT_TIMESTAMP",
            [(run, text)],
        )

    def clear_checkpoint(self, run: str) -> None:
        self._write("DELETE FROM checkpoints WHERE run = ?", [(run,)])


def lease_owner(token: str) -> str:
    """An owner name for a lease: this host, this process, and a token of the run."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def _alive(owner: str) -> bool:
    """Whether the process named in ``owner`` may still run (False only when it is on this host
    and certainly gone)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to someone else
        return True
    return True
