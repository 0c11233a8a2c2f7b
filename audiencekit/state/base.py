"""The state store's contract: what audiencekit remembers between runs, and the rules every
store keeps (SQLite, PostgreSQL, or a store of your own).

Every row is keyed by a **scope** (``"provider/account"``: the provider's name and the
fingerprint of the account it writes to, see :func:`scope_of`) and, for the journal, by the
audience and the member id: two accounts never share a row.

- **The journal**: per (scope, audience, member id) the fingerprint of the attributes last
  written and where that write stands: ``intended`` (about to be sent), ``accepted`` (under a
  handle), ``unknown`` or ``failed`` (no confirmation), or ``settled`` (the provider confirmed
  it). An id without an entry is absent. A run marks what it is about to send before sending
  it, notes each handle as the provider accepts it, and settles entries as writes are
  confirmed, so a crash at any point leaves a store from which the next run converges.
  Entries are read in id order, page by page (:meth:`StateStore.iter_entries`), so that a
  diff never holds an audience in memory.
- **Leases**: one writer per key (a scope and an audience) across processes and hosts. A lease
  is a row with an owner, an expiry and an **epoch** that grows each time the lease changes
  hands. A run passes its :class:`Lease` as ``fence`` to every journal write; the store checks,
  in the same transaction as the write, that the lease is still that owner's, at that epoch,
  unexpired, and raises :class:`~audiencekit.errors.FencingError` (writing nothing) otherwise:
  a worker paused past its lease cannot overwrite the run that took over.
- **Checkpoints**: a small JSON document per run id, for the runs that need one.
- **Run history**: one :class:`RunRecord` per run of a sync, a migrate, a bulk add or remove
  or a retry (when, how many, how it ended, the type of the error it raised), with the ids
  that ended ``failed`` or ``unknown`` (:class:`RunOutcome`: the operation, the status, a short
  reason, and for an add the attributes it wrote, so that a retry can write it again). Read
  newest first by scope (:meth:`StateStore.runs`), one by id or a unique prefix of it
  (:meth:`StateStore.run`), and its ids page by page (:meth:`StateStore.run_outcomes`).

Each method is one transaction, and blocking: the library calls a store from worker threads,
never on the event loop. A store raises :class:`~audiencekit.errors.StateStoreError` (a
subclass naming where and why) for anything that goes wrong in it, never its driver's errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs

from ..errors import RunHistoryError
from ..models import Attributes, Url

if TYPE_CHECKING:
    from ..backend import AudienceBackend

__all__ = [
    "ABSENT",
    "RUN_KINDS",
    "RUN_OPERATIONS",
    "RUN_OUTCOMES",
    "RUN_STATUSES",
    "STATUSES",
    "Entry",
    "Lease",
    "RunOutcome",
    "RunRecord",
    "StateStore",
    "alive",
    "check_mark",
    "decode_attributes",
    "encode_attributes",
    "fingerprint",
    "lease_owner",
    "new_run_id",
    "pick_run",
    "scope_of",
]

#: A fingerprint that stands for "absent": an entry with it is an intended removal.
ABSENT = ""

#: Where a journalled write stands. Every status but "settled" means "may or may not be held".
STATUSES = ("intended", "accepted", "unknown", "failed", "settled")

#: How many entries :meth:`StateStore.iter_entries` reads in one page by default.
PAGE_SIZE = 5_000

#: Seconds a run's lease lasts unless renewed, by default (it is renewed every third of that):
#: how long a worker that died on another host keeps others from its audience.
LEASE_TTL = 30.0


def _plain(value: object) -> object:
    # A Url is a str, but not the same attribute as the str: tag the typed values.
    if isinstance(value, Url):
        return {"url": str(value)}
    if isinstance(value, datetime):
        return {"date": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_blake2b = hashlib.blake2b
_encode_text = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def fingerprint(attributes: Attributes) -> str:
    """A short, stable digest of a member's attributes (order of keys does not matter)."""
    plain: Mapping[str, object] = attributes
    if not {type(value) for value in attributes.values()} <= _PLAIN_TYPES:  # one C-level test
        plain = {name: _plain(value) for name, value in attributes.items()}
    return _blake2b(_encode(plain).encode(), digest_size=12).hexdigest()


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
class Lease:
    """A lease as the store holds it: its ``key``, its ``owner`` (host, process id and a token
    of the run), its ``epoch`` (grows each time the lease changes hands) and the seconds left
    on it. Passed as ``fence`` to the journal's writes by the run that holds it."""

    key: str
    owner: str
    epoch: int
    expires_in: float

    def held_by(self, owner: str) -> bool:
        """Whether ``owner`` holds this lease."""
        return self.owner == owner


#: What a recorded run was.
RUN_KINDS = ("sync", "add", "remove", "migrate", "retry")
#: How a recorded run ended: every id applied; some not; it raised, or applied nothing of what
#: it sent; it was cancelled (Ctrl-C, a cancel scope).
RUN_OUTCOMES = ("ok", "partial", "failed", "interrupted")
#: What the ids a run records ended as (the others were applied).
RUN_STATUSES = ("failed", "unknown")
#: The operation of a recorded id.
RUN_OPERATIONS = ("add", "remove")

#: How many recorded runs :meth:`StateStore.runs` returns by default.
RUNS_LIMIT = 50


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a run's times are aware datetimes, not {value!r}")
    return value.astimezone(timezone.utc)


def _one_of(choices: tuple[str, ...]) -> Any:
    return attrs.validators.in_(choices)


def _counts(value: Mapping[str, int]) -> Mapping[str, int]:
    return {str(name): int(count) for name, count in dict(value).items()}


@attrs.frozen(kw_only=True)
class RunRecord:
    """One run as the history keeps it.

    ``id`` is unique (:func:`new_run_id`: 32 hex digits); ``kind`` one of :data:`RUN_KINDS`;
    ``scope`` whose rows these are (``"provider/account"``) and ``provider`` its provider;
    ``audience`` the audience written (its id once resolved; the reference given when the run
    failed before that); ``started_at`` and ``ended_at`` aware datetimes (in UTC as read back);
    ``counts`` a small mapping of counts (always ``applied``, ``failed`` and ``unknown``; a
    sync adds ``added``, ``changed``, ``removed``, ``unchanged``; a migrate ``read``, ``sent``,
    ``unchanged``, ``removed``, ``invalid``; a bulk call and a retry ``sent``); ``outcome``
    one of :data:`RUN_OUTCOMES`; ``error_type`` the class name of the exception the run raised
    (None when it returned); ``parent`` the run a retry retried; ``journalled`` whether the
    run kept the journal of the audience (sync, migrate, and their retries)."""

    id: str
    kind: str = attrs.field(validator=_one_of(RUN_KINDS))
    provider: str
    scope: str
    audience: str
    started_at: datetime = attrs.field(converter=_utc)
    ended_at: datetime = attrs.field(converter=_utc)
    outcome: str = attrs.field(validator=_one_of(RUN_OUTCOMES))
    counts: Mapping[str, int] = attrs.field(factory=dict, converter=_counts)
    error_type: str | None = None
    parent: str | None = None
    journalled: bool = False

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return (self.ended_at - self.started_at).total_seconds()


class RunOutcome(NamedTuple):
    """One id of a run that did not end applied: ``op`` (``"add"`` or ``"remove"``),
    ``status`` (``"failed"`` or ``"unknown"``), ``reason`` (short and secret-free: the error's
    class name, its HTTP status and the provider's code), and for an add the ``attributes`` it
    wrote (None for a removal, or an add recorded without them)."""

    id: str
    op: str
    status: str
    reason: str
    attributes: Attributes | None = None


def new_run_id() -> str:
    """A new run id: 32 random hex digits (a short prefix of it is already unique)."""
    return uuid.uuid4().hex


def _tagged(value: object) -> object:
    if isinstance(value, Url):
        return {"url": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def encode_attributes(attributes: Attributes | None) -> str | None:
    """A member's attributes as JSON text that :func:`decode_attributes` reads back with the
    same types (a :class:`~audiencekit.Url` and a datetime are tagged)."""
    if attributes is None:
        return None
    plain: Mapping[str, object] = attributes if type(attributes) is dict else dict(attributes)
    if not {type(value) for value in attributes.values()} <= _PLAIN_TYPES:  # one C-level test
        plain = {name: _tagged(value) for name, value in attributes.items()}
    return _encode_text(plain)


def _untagged(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        if tag == "url":
            return Url(text)
        if tag == "datetime":
            return datetime.fromisoformat(text)
    return value


def decode_attributes(text: str | None) -> dict[str, Any] | None:
    """The attributes :func:`encode_attributes` wrote."""
    if text is None:
        return None
    return {name: _untagged(value) for name, value in json.loads(text).items()}


def check_outcomes(outcomes: Iterable[RunOutcome | tuple[Any, ...]]) -> dict[str, RunOutcome]:
    """``outcomes`` by id (the last of an id wins), each checked (ValueError before anything is
    written)."""
    found: dict[str, RunOutcome] = {}
    for row in outcomes:
        item = row if isinstance(row, RunOutcome) else RunOutcome(*row)
        if item.op not in RUN_OPERATIONS:
            raise ValueError(f"a run's outcome is an 'add' or a 'remove', not {item.op!r}")
        if item.status not in RUN_STATUSES:
            raise ValueError(f"a run records 'failed' or 'unknown' ids, not {item.status!r}")
        found[item.id] = item
    return found


def pick_run(prefix: str, found: list[RunRecord]) -> RunRecord | None:
    """The one run of ``found`` (the runs whose id starts with ``prefix``, at most a few): the
    one whose id is ``prefix`` exactly, or the only one; None for none; RunHistoryError when
    several match."""
    for record in found:
        if record.id == prefix:
            return record
    if len(found) > 1:
        ids = sorted(record.id for record in found)
        raise RunHistoryError(
            f"{prefix!r} is the start of the ids of several runs ({', '.join(ids)}): "
            "give more of it",
            run=prefix,
            candidates=ids,
        )
    return found[0] if found else None


class StateStore:
    """What audiencekit remembers between runs (see the module's documentation).

    ``StateStore(path)`` opens a :class:`~audiencekit.state.SqliteStateStore` (as
    ``pathlib.Path`` opens a ``PosixPath``); :meth:`open` takes a path or a URL
    (``postgresql://...``). A store of your own subclasses this class, implements every
    method that raises NotImplementedError here, and runs the conformance suite
    (:mod:`audiencekit.testing.store_contract`). Use a store as a context manager, or call
    :meth:`close`.
    """

    #: Seconds a run's lease lasts unless renewed (set by the store's constructor).
    lease_ttl: float = LEASE_TTL

    def __new__(cls, *args: Any, **kwargs: Any) -> StateStore:
        if cls is StateStore:
            from .sqlite import SqliteStateStore

            return super().__new__(SqliteStateStore)
        return super().__new__(cls)

    @staticmethod
    def open(location: str | os.PathLike[str]) -> StateStore:
        """The store at ``location``: a ``postgresql://`` URL opens a
        :class:`~audiencekit.state.postgres.PostgresStateStore` (the ``postgres`` extra);
        anything else without a scheme is a path to a SQLite file. Another scheme raises
        :class:`~audiencekit.ConfigurationError` (the URL's password is never repeated)."""
        from ._open import open_store

        return open_store(location)

    @property
    def location(self) -> str:
        """Where the store is (a path, or a URL without its password): safe to print."""
        return repr(self)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's resources."""

    # -- the journal ----------------------------------------------------------------------------

    def iter_entries(
        self, scope: str, audience: str, *, after: str | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[tuple[str, Entry]]:
        """Every ``(member id, entry)`` of an audience in id order (by code point), read
        ``page_size`` at a time (each page one :meth:`entries_page`); from the first id after
        ``after`` when given. Entries written while it runs may or may not be seen."""
        while True:
            page = self.entries_page(scope, audience, after, page_size)
            for member, fp, status, handle in page:
                yield member, Entry(fp, status, handle)
            if len(page) < page_size:
                return
            after = page[-1][0]

    def entries_page(
        self, scope: str, audience: str, after: str | None, limit: int
    ) -> list[tuple[str, str, str, str | None]]:
        """Up to ``limit`` entries of an audience whose ids come after ``after`` (from the
        first when None), in id order, as ``(member, fingerprint, status, handle)`` rows: one
        short read, on which :meth:`iter_entries` pages."""
        raise NotImplementedError

    def unsettled(self, scope: str, audience: str) -> list[tuple[str, str, str]]:
        """The entries accepted under a handle and not settled, as ``(member, fingerprint,
        handle)`` rows: the writes of earlier runs still to wait for (a run reads these before
        its diff, without reading the whole audience)."""
        return [
            (member, entry.fingerprint, entry.handle)
            for member, entry in self.iter_entries(scope, audience)
            if not entry.settled and entry.handle is not None
        ]

    def entries(self, scope: str, audience: str) -> dict[str, Entry]:
        """Every entry of an audience: member id → :class:`Entry` (all in memory: for small
        audiences and tests; a diff reads :meth:`iter_entries`)."""
        return dict(self.iter_entries(scope, audience))

    def intend(
        self,
        scope: str,
        audience: str,
        writes: Iterable[tuple[str, str]],
        *,
        fence: Lease | None = None,
    ) -> None:
        """Mark ``(member id, fingerprint)`` writes as about to be sent (``""``: a removal):
        status ``intended``, no handle, whatever the entry said before."""
        raise NotImplementedError

    def accept(
        self,
        scope: str,
        audience: str,
        handle: str,
        ids: Iterable[str],
        *,
        fence: Lease | None = None,
    ) -> None:
        """Note the handle under which the provider accepted the writes of ``ids`` (status
        ``accepted``); entries already settled, and ids without an entry, are left alone."""
        raise NotImplementedError

    def mark(
        self,
        scope: str,
        audience: str,
        status: str,
        ids: Iterable[str],
        *,
        fence: Lease | None = None,
    ) -> None:
        """Note that the writes of ``ids`` ended ``unknown`` or ``failed`` (unconfirmed; any
        other status raises ValueError); settled entries are left alone."""
        raise NotImplementedError

    def record(
        self,
        scope: str,
        audience: str,
        *,
        present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        absent: Iterable[str] = (),
        fence: Lease | None = None,
    ) -> None:
        """Settle: members now ``present`` (id → fingerprint) and ids now ``absent`` (their
        entries are dropped), in one transaction."""
        raise NotImplementedError

    def forget_audience(self, scope: str, audience: str, *, fence: Lease | None = None) -> None:
        """Drop every entry of an audience (after deleting it, say)."""
        raise NotImplementedError

    def pushed(self, scope: str, audience: str) -> dict[str, str]:
        """Member id → fingerprint of the members the provider is known to hold (settled)."""
        return {
            k: e.fingerprint
            for k, e in self.iter_entries(scope, audience)
            if e.settled and e.fingerprint != ABSENT
        }

    def count(self, scope: str, audience: str) -> int:
        """How many members the provider is known to hold (settled entries)."""
        return sum(1 for _, e in self.iter_entries(scope, audience)
                   if e.settled and e.fingerprint != ABSENT)  # fmt: skip

    def claim_legacy(self, provider: str, scope: str) -> int:
        """Give the rows an audiencekit 0.1 store kept under the provider's name alone (it knew
        no accounts) to ``scope``, the account that opens them first; how many entries moved
        (0 when there are none left, or the store never held any)."""
        raise NotImplementedError

    # -- leases ---------------------------------------------------------------------------------

    def acquire_lease(self, key: str, owner: str, ttl: float) -> Lease:
        """Take ``key`` for ``ttl`` seconds unless another owner holds it, and return the
        lease as it stands: ``lease.held_by(owner)`` says whether it was taken (or renewed,
        for the same owner). An expired lease is taken over, with a new epoch; so is one
        whose owner is a process of this host that is gone. Times come from the store's own
        clock (the database's, for a server), never the caller's."""
        raise NotImplementedError

    def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend ``lease`` by ``ttl`` seconds from now; False (nothing changed) when its owner
        no longer holds it at its epoch, or it expired."""
        raise NotImplementedError

    def release_lease(self, lease: Lease) -> None:
        """Give ``lease`` up (nothing happens when its owner no longer holds it)."""
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, run: str) -> dict[str, Any] | None:
        """The saved state of run ``run``, or None."""
        raise NotImplementedError

    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        """Replace the saved state of ``run`` (atomically; ``data`` is JSON-serialisable)."""
        raise NotImplementedError

    def clear_checkpoint(self, run: str) -> None:
        """Forget run ``run``."""
        raise NotImplementedError

    # -- run history -----------------------------------------------------------------------

    def record_run(
        self, record: RunRecord, outcomes: Iterable[RunOutcome | tuple[Any, ...]] = ()
    ) -> None:
        """Keep ``record`` and the ids of it that ended failed or unknown (``outcomes``:
        :class:`RunOutcome` rows, or tuples of their fields; the last of an id wins), in one
        transaction and in bulk. A run recorded again under the same id replaces the first."""
        raise NotImplementedError

    def runs(
        self, scope: str | None = None, *, audience: str | None = None, limit: int = RUNS_LIMIT
    ) -> list[RunRecord]:
        """The ``limit`` latest runs (by start) of ``scope`` (of every scope when None; of
        ``audience`` only, when given), newest first."""
        raise NotImplementedError

    def run(self, run_id: str, *, scope: str | None = None) -> RunRecord | None:
        """The run whose id is ``run_id``, or the one whose id starts with it (as git reads a
        short commit id); of ``scope`` only, when given. None when there is none;
        :class:`~audiencekit.errors.RunHistoryError` (``candidates``) when several runs' ids
        start with it."""
        raise NotImplementedError

    def run_outcomes_page(self, run_id: str, after: str | None, limit: int) -> list[RunOutcome]:
        """Up to ``limit`` recorded ids of run ``run_id`` (its whole id) after ``after`` (from
        the first when None), in id order: one short read, on which :meth:`run_outcomes`
        pages."""
        raise NotImplementedError

    def run_outcomes(self, run_id: str, *, page_size: int = PAGE_SIZE) -> Iterator[RunOutcome]:
        """Every id recorded for run ``run_id`` (its whole id), in id order, read ``page_size``
        at a time: a run of a million failed ids is never held in memory."""
        after: str | None = None
        while True:
            page = self.run_outcomes_page(run_id, after, page_size)
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].id


def check_mark(status: str) -> str:
    """``status`` when :meth:`StateStore.mark` may set it (``unknown`` or ``failed``); else
    ValueError, before anything is written."""
    if status not in ("unknown", "failed"):
        raise ValueError(f"mark() takes 'unknown' or 'failed', not {status!r}")
    return status


def scope_of(backend: AudienceBackend) -> str:
    """The scope a backend's rows are kept under: its provider's name and the fingerprint of
    the account it writes to (``"batch/3f2a..."``): two accounts never share a row."""
    return f"{backend.provider}/{backend.account}"


def lease_owner(token: str) -> str:
    """An owner name for a lease: this host, this process, and a token of the run."""
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def alive(owner: str) -> bool:
    """Whether the process named in ``owner`` (see :func:`lease_owner`) may still run: False
    only when it is on this host and certainly gone."""
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
