"""The PostgreSQL state store: one database shared by workers on several hosts (the
``postgres`` extra: psycopg 3 and its connection pool)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..core.rate import _EPSILON, BudgetUnavailableError, budget_unusable
from ..core.urls import POSTGRES_SCHEMES, is_url, passwords, redacted
from ..errors import (
    ConfigurationError,
    FencingError,
    StateStoreAccessError,
    StateStoreConnectionError,
    StateStoreError,
    StateStoreLockedError,
    StateStoreVersionError,
)
from .base import (
    LEASE_TTL,
    RUN_KINDS,
    RUN_OUTCOMES,
    RUNS_LIMIT,
    STATUSES,
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

__all__ = ["PostgresBudget", "PostgresStateStore"]

F = TypeVar("F", bound=Callable[..., Any])

#: The schema this code writes (the version row of ``audiencekit_schema``). 1: entries,
#: checkpoints, leases; 2: the run history (runs, run outcomes).
SCHEMA_VERSION = 2

#: The version row, created first: opening a store locks it, so that one process at a time
#: creates or upgrades the schema.
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS audiencekit_schema (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
)
"""

#: What upgrades the schema from version ``i`` to ``i + 1``, for each ``i``. Members are
#: compared byte by byte (``COLLATE "C"``: code-point order in UTF-8, as SQLite orders them).
_UPGRADES = (
    f"""
CREATE TABLE audiencekit_entries (
    scope text NOT NULL,
    audience text NOT NULL,
    member text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    status text NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    handle text,
    PRIMARY KEY (scope, audience, member)
);
CREATE TABLE audiencekit_checkpoints (
    run text PRIMARY KEY,
    data text NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE audiencekit_leases (
    key text PRIMARY KEY,
    owner text NOT NULL,
    expires timestamptz NOT NULL,
    epoch bigint NOT NULL
);
""",
    f"""
CREATE TABLE audiencekit_runs (
    id text COLLATE "C" PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ({", ".join(f"'{k}'" for k in RUN_KINDS)})),
    provider text NOT NULL,
    scope text NOT NULL,
    audience text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ({", ".join(f"'{o}'" for o in RUN_OUTCOMES)})),
    counts text NOT NULL,
    error_type text,
    parent text,
    journalled boolean NOT NULL DEFAULT false
);
CREATE INDEX audiencekit_runs_by_scope ON audiencekit_runs (scope, started_at);
CREATE INDEX audiencekit_runs_by_start ON audiencekit_runs (started_at);
CREATE TABLE audiencekit_run_outcomes (
    run text COLLATE "C" NOT NULL,
    member text COLLATE "C" NOT NULL,
    op text NOT NULL,
    status text NOT NULL,
    reason text NOT NULL,
    attributes text,
    PRIMARY KEY (run, member)
);
""",
)


def _upsert(status: str) -> str:
    return (
        "INSERT INTO audiencekit_entries (scope, audience, member, fingerprint, status) "
        f"SELECT %s, %s, w.member, w.fingerprint, '{status}' "
        "FROM unnest(%s::text[], %s::text[]) AS w (member, fingerprint) "
        "ON CONFLICT (scope, audience, member) DO UPDATE "
        f"SET fingerprint = excluded.fingerprint, status = '{status}', handle = NULL"
    )


_INTEND, _SETTLE = _upsert("intended"), _upsert("settled")

#: The lease a fenced write names, still its owner's at its epoch and unexpired; locked
#: (FOR SHARE) until the write commits, so that it cannot change hands in between.
_FENCE = (
    "SELECT 1 FROM audiencekit_leases WHERE key = %s AND owner = %s AND epoch = %s "
    "AND expires > clock_timestamp() FOR SHARE"
)

#: What ``CREATE TABLE IF NOT EXISTS`` raises when another transaction created the table (its
#: row type, or its name) after this one looked: by then it exists, so trying again works.
_CREATED_MEANWHILE = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DuplicateObject,
    psycopg.errors.DuplicateTable,
)

#: How many rows one statement of a bulk write carries.
_BATCH = 10_000

#: What the server answers a connection to a database it does not have.
_MISSING_DATABASE = re.compile(r'FATAL: +database "[^"]*" does not exist')

#: SQLSTATE classes of a connection that failed or went away: connection exception, invalid
#: authorization, operator intervention (the server shut down or restarted).
_CONNECTION_CLASSES = ("08", "28", "57")


def _translated(method: F) -> F:
    """Raise what goes wrong in ``method`` as a StateStoreError naming the store, never as a
    psycopg error."""

    @functools.wraps(method)
    def call(self: PostgresStateStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            error, cause = self._error(exc), None if self._repeats_password(exc) else exc
        raise error from cause

    return call  # type: ignore[return-value]


def _check_url(url: str, what: str) -> None:
    if not is_url(url) or url.partition("://")[0].lower() not in POSTGRES_SCHEMES:
        raise ConfigurationError(f"{what} takes a postgresql:// URL")


def _passwords(url: str) -> list[str]:
    """The passwords of ``url``, longest first (so that none is half replaced)."""
    return sorted(passwords(url), key=len, reverse=True)


def _discreet(exc: psycopg.Error, passwords: list[str]) -> str:
    """The text of ``exc``, each of ``passwords`` replaced by ``***``."""
    text = str(exc).strip()
    for password in passwords:
        text = text.replace(password, "***")
    return text


def _options(timeout: float) -> dict[str, Any]:
    """How the store and the budget connect: autocommit, no prepared statements (PgBouncer in
    transaction mode), and ``timeout`` to connect."""
    return {
        "autocommit": True,
        "prepare_threshold": None,
        "connect_timeout": max(2, round(timeout)),  # libpq counts whole seconds, from 2
        "application_name": "audiencekit",
    }


_RUN_COLUMNS = (
    "id, kind, provider, scope, audience, started_at, ended_at, outcome, counts, error_type, "
    "parent, journalled"
)


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0], kind=row[1], provider=row[2], scope=row[3], audience=row[4],
        started_at=row[5], ended_at=row[6], outcome=row[7], counts=json.loads(row[8]),
        error_type=row[9], parent=row[10], journalled=row[11],
    )  # fmt: skip


def _batches(rows: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(rows), _BATCH):
        yield rows[start : start + _BATCH]


class PostgresStateStore(StateStore):
    """The state store in a PostgreSQL database, for workers on several hosts.

    ``url`` is a ``postgresql://`` URL; its password is never repeated (the store's ``url``
    and every error name the URL with ``***`` in its place). The store creates its tables
    (``audiencekit_*``, so it can share a database) and upgrades them when opened; one of a
    newer audiencekit is refused. Calls share a pool of at most ``pool_size`` connections;
    ``timeout`` is how long a call waits to connect, or for a free connection, before it
    raises :class:`~audiencekit.errors.StateStoreConnectionError`.

    Lease times come from the database's clock. No advisory locks and no prepared
    statements: the store works behind PgBouncer in transaction mode.
    """

    def __init__(
        self, url: str, *, pool_size: int = 4, timeout: float = 10.0, lease_ttl: float = LEASE_TTL
    ) -> None:
        self.lease_ttl = lease_ttl
        _check_url(url, "a PostgreSQL state store")
        self.url = redacted(url)
        self.timeout = timeout
        self._passwords = _passwords(url)
        options = _options(timeout)
        self._migrate(url, options)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=options,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            check=ConnectionPool.check_connection,
            name="audiencekit-state",
            open=False,
        )
        self._pool.open()

    def __repr__(self) -> str:
        return f"<PostgresStateStore {self.url}>"

    @property
    def location(self) -> str:
        return self.url

    # -- opening ----------------------------------------------------------------------------

    @_translated
    def _migrate(self, url: str, options: Mapping[str, Any]) -> None:
        """Create or upgrade the schema, in one transaction, on a connection of its own (a
        failure to connect is told at once, with its reason). Two processes opening a new
        database at once: one creates the version table while the other waits for its
        name, then fails on it (see _CREATED_MEANWHILE) and tries again, now to wait on the
        table's lock."""
        with psycopg.connect(url, **options) as db:
            for attempt in (1, 2):
                try:
                    with db.transaction():
                        db.execute(_VERSION_TABLE)
                        db.execute("LOCK TABLE audiencekit_schema IN SHARE ROW EXCLUSIVE MODE")
                        row = db.execute("SELECT version FROM audiencekit_schema").fetchone()
                        self._upgrade(db, 0 if row is None else row[0])
                except _CREATED_MEANWHILE:
                    if attempt == 2:
                        raise
                else:
                    return

    def _upgrade(self, db: psycopg.Connection[Any], version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StateStoreVersionError(
                self.url,
                f"it was written by a newer audiencekit (schema {version}; this version reads "
                f"up to {SCHEMA_VERSION})",
            )
        if version == SCHEMA_VERSION:
            return
        for step in _UPGRADES[version:]:
            db.execute(step)
        db.execute(
            "INSERT INTO audiencekit_schema (version) VALUES (%s) "
            "ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )

    def _error(self, exc: psycopg.Error) -> StateStoreError:
        """The StateStoreError that says what ``exc`` means for this store (the password,
        should the driver's text repeat it, replaced)."""
        text = _discreet(exc, self._passwords)
        if isinstance(exc, PoolTimeout):
            return StateStoreConnectionError(
                self.url, f"no connection to the server within {self.timeout:g} s"
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege) or _MISSING_DATABASE.search(text):
            return StateStoreAccessError(self.url, text)
        if isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)):
            return StateStoreLockedError(self.url, text)
        if isinstance(exc, psycopg.OperationalError) and (
            exc.sqlstate is None or exc.sqlstate[:2] in _CONNECTION_CLASSES
        ):
            return StateStoreConnectionError(self.url, text)
        return StateStoreError(self.url, text)

    def _repeats_password(self, exc: psycopg.Error) -> bool:
        """Whether ``exc`` repeats the password: in its text, or in the connection it carries
        (a failed connection attempt's, which holds every connection parameter)."""
        texts = (str(exc), repr(exc.pgconn))
        return any(password in text for password in self._passwords for text in texts)

    @_translated
    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _transaction(self, fence: Lease | None = None) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: committed, or rolled back on error. With ``fence``, it raises
        FencingError first (so nothing is written) unless that lease is still held by its
        owner at its epoch, and keeps the lease from changing hands until it commits."""
        try:
            with self._pool.connection() as db, db.transaction(), db.cursor() as cursor:
                if fence is not None:
                    self._fence(cursor, fence)
                yield cursor
        except psycopg.errors.IdleInTransactionSessionTimeout:
            if fence is None:
                raise
            # The server ended the transaction, rolled back: the run stalled inside it.
            raise FencingError(
                fence.key, "the run stalled inside a write past the lease's time; nothing written"
            ) from None

    def _fence(self, cursor: psycopg.Cursor[Any], fence: Lease) -> None:
        """Check ``fence`` and lock its row until the transaction ends. A run that stalls
        inside the transaction (a stopped process, a frozen host) would keep the row locked,
        and so every takeover waiting: the server ends such a transaction once it has been idle
        for the lease's time (set for this transaction only, as PgBouncer needs)."""
        if math.isfinite(self.lease_ttl):
            cursor.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                (str(max(1, math.ceil(self.lease_ttl * 1000))),),
            )
        cursor.execute(_FENCE, (fence.key, fence.owner, fence.epoch))
        if cursor.fetchone() is None:
            raise FencingError(
                fence.key, f"the lease ran out or changed hands (this run held epoch {fence.epoch})"
            )

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as db:
            return db.execute(sql, params).fetchall()

    # -- the journal ----------------------------------------------------------------------------

    @_translated
    def entries_page(
        self, scope: str, audience: str, after: str | None, limit: int
    ) -> list[tuple[str, str, str, str | None]]:
        return self._read(
            "SELECT member, fingerprint, status, handle FROM audiencekit_entries "
            "WHERE scope = %s AND audience = %s AND member > %s ORDER BY member LIMIT %s",
            (scope, audience, "" if after is None else after, limit),
        )

    @_translated
    def unsettled(self, scope: str, audience: str) -> list[tuple[str, str, str]]:
        return self._read(
            "SELECT member, fingerprint, handle FROM audiencekit_entries WHERE scope = %s "
            "AND audience = %s AND status != 'settled' AND handle IS NOT NULL ORDER BY member",
            (scope, audience),
        )

    @_translated
    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        rows = self._read(
            "SELECT member, fingerprint FROM audiencekit_entries WHERE scope = %s "
            "AND audience = %s AND status = 'settled' AND fingerprint != ''",
            (scope, audience),
        )
        return dict(rows)

    @_translated
    def count(self, scope: str, audience: str) -> int:
        ((found,),) = self._read(
            "SELECT count(*) FROM audiencekit_entries WHERE scope = %s AND audience = %s "
            "AND status = 'settled' AND fingerprint != ''",
            (scope, audience),
        )
        return int(found)

    def _upsert(
        self, cursor: psycopg.Cursor[Any], sql: str, scope: str, audience: str,
        writes: Iterable[tuple[str, str]],
    ) -> None:  # fmt: skip
        """Write ``(member, fingerprint)`` pairs with ``sql`` (an upsert): the last pair of an
        id wins, and ids are written in order (two writers lock rows in one order)."""
        last = dict(writes)
        members = sorted(last)
        for batch in _batches(members):
            cursor.execute(sql, (scope, audience, batch, [last[k] for k in batch]))

    @_translated
    def intend(
        self,
        scope: str,
        audience: str,
        writes: Iterable[tuple[str, str]],
        *,
        fence: Lease | None = None,
    ) -> None:
        with self._transaction(fence) as cursor:
            self._upsert(cursor, _INTEND, scope, audience, writes)

    def _update(
        self, sql: str, params: tuple[Any, ...], ids: Iterable[str], fence: Lease | None
    ) -> None:
        """Run ``sql`` (whose last parameter is an array of member ids) for ``ids``."""
        members = sorted(set(ids))
        with self._transaction(fence) as cursor:
            for batch in _batches(members):
                cursor.execute(sql, (*params, batch))

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
        self._update(
            "UPDATE audiencekit_entries SET status = 'accepted', handle = %s WHERE scope = %s "
            "AND audience = %s AND member = ANY(%s::text[]) AND status != 'settled'",
            (handle, scope, audience),
            ids,
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
        self._update(
            "UPDATE audiencekit_entries SET status = %s WHERE scope = %s AND audience = %s "
            "AND member = ANY(%s::text[]) AND status != 'settled'",
            (status, scope, audience),
            ids,
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
        gone = sorted(set(absent))
        with self._transaction(fence) as cursor:
            self._upsert(cursor, _SETTLE, scope, audience, items)
            for batch in _batches(gone):
                cursor.execute(
                    "DELETE FROM audiencekit_entries WHERE scope = %s AND audience = %s "
                    "AND member = ANY(%s::text[])",
                    (scope, audience, batch),
                )

    @_translated
    def forget_audience(self, scope: str, audience: str, *, fence: Lease | None = None) -> None:
        with self._transaction(fence) as cursor:
            cursor.execute(
                "DELETE FROM audiencekit_entries WHERE scope = %s AND audience = %s",
                (scope, audience),
            )

    def claim_legacy(self, provider: str, scope: str) -> int:
        """Nothing to claim: audiencekit 0.1 kept no PostgreSQL store."""
        return 0

    # -- leases ---------------------------------------------------------------------------------

    @_translated
    def acquire_lease(self, key: str, owner: str, ttl: float) -> Lease:
        with self._transaction() as cursor:
            while True:
                row = cursor.execute(
                    "SELECT owner, epoch, extract(epoch FROM expires - clock_timestamp())::float8 "
                    "FROM audiencekit_leases WHERE key = %s FOR UPDATE",
                    (key,),
                ).fetchone()
                if row is None:
                    cursor.execute(
                        "INSERT INTO audiencekit_leases (key, owner, expires, epoch) VALUES "
                        "(%s, %s, clock_timestamp() + make_interval(secs => %s), 1) "
                        "ON CONFLICT (key) DO NOTHING",
                        (key, owner, ttl),
                    )
                    if cursor.rowcount == 1:
                        return Lease(key, owner, 1, ttl)
                    continue  # another process took it first: read its lease
                holder, epoch, left = row
                if holder != owner and left > 0 and alive(holder):
                    return Lease(key, holder, epoch, left)
                epoch += holder != owner
                cursor.execute(
                    "UPDATE audiencekit_leases SET owner = %s, epoch = %s, "
                    "expires = clock_timestamp() + make_interval(secs => %s) WHERE key = %s",
                    (owner, epoch, ttl, key),
                )
                return Lease(key, owner, epoch, ttl)

    @_translated
    def renew_lease(self, lease: Lease, ttl: float) -> bool:
        with self._transaction() as cursor:
            cursor.execute(
                "UPDATE audiencekit_leases SET expires = clock_timestamp() + "
                "make_interval(secs => %s) WHERE key = %s AND owner = %s AND epoch = %s "
                "AND expires > clock_timestamp()",
                (ttl, lease.key, lease.owner, lease.epoch),
            )
            return cursor.rowcount == 1

    @_translated
    def release_lease(self, lease: Lease) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                # Kept, expired, so that the next owner's epoch is higher still.
                "UPDATE audiencekit_leases SET expires = 'epoch' "
                "WHERE key = %s AND owner = %s AND epoch = %s",
                (lease.key, lease.owner, lease.epoch),
            )

    # -- run history ----------------------------------------------------------------------------

    @_translated
    def record_run(
        self, record: RunRecord, outcomes: Iterable[RunOutcome | tuple[Any, ...]] = ()
    ) -> None:
        rows = check_outcomes(outcomes)
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM audiencekit_run_outcomes WHERE run = %s", (record.id,))
            cursor.execute(
                f"INSERT INTO audiencekit_runs ({_RUN_COLUMNS}) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS.split(", ")[1:]),
                (
                    record.id, record.kind, record.provider, record.scope, record.audience,
                    record.started_at, record.ended_at, record.outcome,
                    json.dumps(dict(record.counts), sort_keys=True), record.error_type,
                    record.parent, record.journalled,
                ),
            )  # fmt: skip
            if not rows:
                return
            with cursor.copy(
                "COPY audiencekit_run_outcomes (run, member, op, status, reason, attributes) "
                "FROM STDIN"
            ) as copy:
                run = record.id
                for o in rows.values():
                    copy.write_row((run, o.id, o.op, o.status, o.reason,
                                    encode_attributes(o.attributes)))  # fmt: skip

    @_translated
    def runs(
        self, scope: str | None = None, *, audience: str | None = None, limit: int = RUNS_LIMIT
    ) -> list[RunRecord]:
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM audiencekit_runs WHERE (%s::text IS NULL OR scope = %s) "
            "AND (%s::text IS NULL OR audience = %s) ORDER BY started_at DESC, id DESC LIMIT %s",
            (scope, scope, audience, audience, limit),
        )
        return [_run_record(row) for row in rows]

    @_translated
    def run(self, run_id: str, *, scope: str | None = None) -> RunRecord | None:
        if not run_id:
            return None
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM audiencekit_runs WHERE id >= %s AND id < %s "
            "AND (%s::text IS NULL OR scope = %s) ORDER BY id LIMIT 10",
            (run_id, run_id + "\U0010ffff", scope, scope),
        )
        return pick_run(run_id, [_run_record(row) for row in rows])

    @_translated
    def run_outcomes_page(self, run_id: str, after: str | None, limit: int) -> list[RunOutcome]:
        rows = self._read(
            "SELECT member, op, status, reason, attributes FROM audiencekit_run_outcomes "
            "WHERE run = %s AND member > %s ORDER BY member LIMIT %s",
            (run_id, "" if after is None else after, limit),
        )
        return [RunOutcome(k, op, st, why, decode_attributes(at)) for k, op, st, why, at in rows]

    # -- checkpoints ----------------------------------------------------------------------------

    @_translated
    def checkpoint(self, run: str) -> dict[str, Any] | None:
        rows = self._read("SELECT data FROM audiencekit_checkpoints WHERE run = %s", (run,))
        return dict(json.loads(rows[0][0])) if rows else None

    @_translated
    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "INSERT INTO audiencekit_checkpoints (run, data) VALUES (%s, %s) "
                "ON CONFLICT (run) DO UPDATE SET data = excluded.data, updated = now()",
                (run, json.dumps(data, separators=(",", ":"))),
            )

    @_translated
    def clear_checkpoint(self, run: str) -> None:
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM audiencekit_checkpoints WHERE run = %s", (run,))


# -- the shared rate budget ---------------------------------------------------------------------

#: The budget's tables: the pace is UNLOGGED (no WAL: a grant's commit waits on no disk; a
#: crash empties it, which only forgets when the next slots are due).
_BUDGET_SCHEMA = (
    """
CREATE UNLOGGED TABLE IF NOT EXISTS audiencekit_pace (
    key text PRIMARY KEY,
    due timestamptz NOT NULL,
    previous timestamptz NOT NULL,
    written timestamptz NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS audiencekit_pace_secret (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    secret bytea NOT NULL
)
""",
)

#: A row written this long after the database's clock reads now was written before that clock
#: was set back: its due time is ignored (as SqliteBudget ignores one from before a reboot).
_SET_BACK = 60.0

#: Write the row of ``key`` as of one reading of the database's clock (``c.now``; taken before
#: the row's lock, so a grant that waited on another is as of a moment earlier, which errs on
#: the side of waiting). The due time moves as :func:`~audiencekit.core.rate.take_slot` says;
#: ``previous`` keeps the one it replaced, so that RETURNING can tell a grant from a refusal.
_WRITE = """
INSERT INTO audiencekit_pace AS p (key, due, previous, written)
SELECT %(key)s, c.now + make_interval(secs => %(after)s), c.now, c.now
FROM (SELECT clock_timestamp() AS now) AS c
ON CONFLICT (key) DO UPDATE SET previous = p.due, written = excluded.written, due = CASE
    WHEN p.written - excluded.written > make_interval(secs => %(set_back)s) THEN excluded.due
"""

_GRANT = (
    _WRITE
    + """
    WHEN p.due - excluded.written > make_interval(secs => %(epsilon)s) THEN p.due
    WHEN excluded.written - p.due <= make_interval(secs => %(slack)s)
        THEN p.due + make_interval(secs => %(after)s)
    ELSE excluded.due
END
RETURNING CASE WHEN p.due = p.previous
    THEN extract(epoch FROM p.due - p.written)::float8 ELSE 0.0 END
"""
)

_HOLD = _WRITE + "    ELSE greatest(p.due, excluded.due)\nEND"


class PostgresBudget:
    """A :class:`~audiencekit.core.rate.SharedBudget` in a PostgreSQL database, for processes on
    several hosts: one row per scope, under an HMAC of it keyed by a random secret kept in the
    database; one upsert per grant. Reads ``AUDIENCEKIT_SHARED_BUDGET=postgresql://...``.

    Times are the database's (``clock_timestamp()``): the ``now`` a governor passes is its
    host's monotonic clock, which means nothing on another host, so it is not read; the wait a
    grant returns and a hold's pause are durations, alike on every host. Opened on first use;
    once it fails (the server unreachable, the password refused, the server gone mid-run), every
    call raises BudgetUnavailableError, and the first logs one warning (the URL's password
    shown as ``***``). ``timeout``: how long a call may wait to connect.
    """

    def __init__(self, url: str, *, timeout: float = 2.0, pool_size: int = 2) -> None:
        _check_url(url, "a PostgreSQL rate budget")
        self.url = redacted(url)
        self.timeout = timeout
        self.pool_size = pool_size
        self._dsn = url
        self._passwords = _passwords(url)
        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pid = 0
        self._secret = b""
        self._failure: str | None = None

    def __repr__(self) -> str:
        return f"<PostgresBudget {self.url}>"

    def grant(self, scope: str, now: float, interval: float, slack: float) -> float:
        after = {"after": interval, "slack": slack, "epsilon": _EPSILON}
        ((wait,),) = self._run(_GRANT, scope, after)
        return float(wait)

    def hold(self, scope: str, now: float, pause: float) -> None:
        self._run(_HOLD, scope, {"after": pause})

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.close()
            self._pool = None

    def _run(self, sql: str, scope: str, params: dict[str, float]) -> list[tuple[Any, ...]]:
        """Run one statement of the budget for ``scope``; its RETURNING rows."""
        try:
            pool = self._opened()
            key = hmac.new(self._secret, scope.encode(), hashlib.sha256).hexdigest()
            with pool.connection() as db:
                cursor = db.execute(sql, {"key": key, "set_back": _SET_BACK, **params})
                return cursor.fetchall() if cursor.description else []
        except psycopg.Error as exc:
            raise self._unusable(_discreet(exc, self._passwords)) from None

    def _opened(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """The pool (opened again in a forked child, which shares no connection), once the
        tables exist and the secret is read; raises BudgetUnavailableError after a failure."""
        with self._lock:
            if self._failure is not None:
                raise BudgetUnavailableError(self._failure)
            if self._pool is not None and self._pid == os.getpid():
                return self._pool
            options = _options(self.timeout)
            with psycopg.connect(self._dsn, **options) as db:  # tells why it cannot connect
                self._secret = self._prepare(db)
            self._pool = ConnectionPool(
                self._dsn,
                kwargs=options,
                min_size=1,
                max_size=self.pool_size,
                timeout=self.timeout,
                name="audiencekit-budget",
                open=False,
            )
            self._pool.open()
            self._pid = os.getpid()
            return self._pool

    @classmethod
    def _prepare(cls, db: psycopg.Connection[Any]) -> bytes:
        """Create the budget's tables when missing and return the secret; again when another
        process created them meanwhile (see _CREATED_MEANWHILE): they exist then."""
        try:
            return cls._create(db)
        except _CREATED_MEANWHILE:
            return cls._create(db)

    @staticmethod
    def _create(db: psycopg.Connection[Any]) -> bytes:
        with db.transaction():
            for statement in _BUDGET_SCHEMA:
                db.execute(statement)
            db.execute(
                "INSERT INTO audiencekit_pace_secret (secret) VALUES (%s) "
                "ON CONFLICT (one) DO NOTHING",
                (secrets.token_bytes(32),),
            )
            row = db.execute("SELECT secret FROM audiencekit_pace_secret").fetchone()
        assert row is not None
        return bytes(row[0])

    def _unusable(self, reason: str) -> BudgetUnavailableError:
        """Note that the budget cannot be used (warning once) and close its pool, whose
        attempts to reconnect would log on and on."""
        with self._lock:
            if self._failure is not None:
                return BudgetUnavailableError(self._failure)
            error = budget_unusable(self.url, reason)
            self._failure = str(error)
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close(timeout=0)
        return error
