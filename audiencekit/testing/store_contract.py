"""The contract every :class:`~audiencekit.state.StateStore` keeps, as a pytest test class.

Subclass :class:`StoreContract` in a test module and provide one fixture:

- ``store_location``: the location of a new, empty store, for each test (a file under
  ``tmp_path`` for SQLite, the URL of an empty database for PostgreSQL).

The suite opens clients of the location with :attr:`StoreContract.opener` (``StateStore.open``
unless set: ``"mypackage.store:MyStore"``), in the test's process (two clients of one location
stand for two processes) and in the child processes its crash tests SIGKILL. A store that
lives in one process overrides :meth:`StoreContract.open_store` and sets ``opener`` to None:
the crash tests are skipped (:class:`DictStore`, the reference store in dicts, is run so). A
store with a previous schema implements :meth:`StoreContract.create_previous_store`, so that
the suite checks an upgrade keeps its rows. The tests are synchronous, as a store's methods
are blocking.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import attrs
import pytest

from ..errors import FencingError, RunHistoryError
from ..models import Url
from ..state.base import (
    ABSENT,
    PAGE_SIZE,
    RUNS_LIMIT,
    Entry,
    Lease,
    RunOutcome,
    RunRecord,
    StateStore,
    alive,
    check_mark,
    check_outcomes,
    lease_owner,
    new_run_id,
    pick_run,
)

__all__ = ["DictStore", "StoreContract"]

PROVIDER = "batch"
SCOPE = f"{PROVIDER}/3f2a9c0d"
OTHER_SCOPE = f"{PROVIDER}/77b0e1aa"  # the same provider, another account
AUDIENCE, OTHER_AUDIENCE = "spring", "autumn"

#: Long enough for any call; leases that are meant to expire get SHORT_TTL and a wait of EXPIRY.
TTL = 30.0
SHORT_TTL = 0.3
EXPIRY = SHORT_TTL * 1.5

#: Ids whose code-point order differs from a locale's, from byte order of UTF-16, and by length.
AWKWARD_IDS = ["z", "é", "b", "a0", "a", "B", "aa", "ﬁ", "😀", "a-", "Z9", "ä"]

Snapshot = tuple[dict[str, Entry], dict[str, Any] | None]
Write = Callable[[StateStore, Lease | None], None]

#: The calls of the crash child, in order, each with the entries and checkpoint it leaves:
#: each call changes every entry, so a call cut short shows as a state no list item has.
CRASH_IDS = [f"id-{i:05d}" for i in range(2_000)]
_HALF = len(CRASH_IDS) // 2
_RUN = "crash-run"
_SENT = {"phase": "sent", "ids": CRASH_IDS}


def every(fingerprint: str, status: str, handle: str | None = None,
          ids: list[str] = CRASH_IDS) -> dict[str, Entry]:  # fmt: skip
    """The same entry for each of ``ids``."""
    return dict.fromkeys(ids, Entry(fingerprint, status, handle))


CRASH_STEPS: list[tuple[Write, Snapshot]] = [
    (lambda s, f: s.intend(SCOPE, AUDIENCE, ((k, "v1") for k in CRASH_IDS), fence=f),
     (every("v1", "intended"), None)),
    (lambda s, f: s.save_checkpoint(_RUN, _SENT), (every("v1", "intended"), _SENT)),
    (lambda s, f: s.accept(SCOPE, AUDIENCE, "h1", CRASH_IDS, fence=f),
     (every("v1", "accepted", "h1"), _SENT)),
    (lambda s, f: s.record(SCOPE, AUDIENCE, present=dict.fromkeys(CRASH_IDS, "v1"), fence=f),
     (every("v1", "settled"), _SENT)),
    (lambda s, f: s.intend(SCOPE, AUDIENCE, ((k, "v2") for k in CRASH_IDS), fence=f),
     (every("v2", "intended"), _SENT)),
    (lambda s, f: s.mark(SCOPE, AUDIENCE, "unknown", CRASH_IDS, fence=f),
     (every("v2", "unknown"), _SENT)),
    (lambda s, f: s.record(SCOPE, AUDIENCE, present=((k, "v2") for k in CRASH_IDS[:_HALF]),
                           absent=CRASH_IDS[_HALF:], fence=f),
     (every("v2", "settled", ids=CRASH_IDS[:_HALF]), _SENT)),
    (lambda s, f: s.save_checkpoint(_RUN, {"phase": "done"}),
     (every("v2", "settled", ids=CRASH_IDS[:_HALF]), {"phase": "done"})),
    (lambda s, f: s.forget_audience(SCOPE, AUDIENCE, fence=f), ({}, {"phase": "done"})),
]  # fmt: skip

#: Each journal write, from the entries of :data:`FENCE_SEED` to the entries it leaves.
FENCE_SEED = {"m1": Entry("old", "settled"), "m2": Entry("old", "intended")}
FENCED_WRITES: dict[str, tuple[Write, dict[str, Entry]]] = {
    "intend": (lambda s, f: s.intend(SCOPE, AUDIENCE, [("m1", "new"), ("m9", "new")], fence=f),
               {"m1": Entry("new", "intended"), "m2": Entry("old", "intended"),
                "m9": Entry("new", "intended")}),
    "accept": (lambda s, f: s.accept(SCOPE, AUDIENCE, "h2", ["m2"], fence=f),
               {"m1": Entry("old", "settled"), "m2": Entry("old", "accepted", "h2")}),
    "mark": (lambda s, f: s.mark(SCOPE, AUDIENCE, "failed", ["m2"], fence=f),
             {"m1": Entry("old", "settled"), "m2": Entry("old", "failed")}),
    "record": (lambda s, f: s.record(SCOPE, AUDIENCE, present={"m2": "new"}, absent=["m1"],
                                     fence=f),
               {"m2": Entry("new", "settled")}),
    "forget_audience": (lambda s, f: s.forget_audience(SCOPE, AUDIENCE, fence=f), {}),
}  # fmt: skip


def load(name: str) -> Any:
    """The object ``"module:qualified.name"`` names."""
    module, _, path = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in path.split("."):
        found = getattr(found, part)
    return found


def child(opener: str, location: str, mode: str) -> None:
    """The process the crash tests kill: it takes a lease (a short one in mode ``lease``) and
    prints ``leased EPOCH``; in modes ``journal`` and ``close`` it makes the calls of
    :data:`CRASH_STEPS`, printing ``done`` after each; then it closes the store (``close``)
    or waits to be killed."""
    store = load(opener)(location)
    lease = store.acquire_lease(AUDIENCE, lease_owner("child"), SHORT_TTL if mode == "lease"
                                else TTL)  # fmt: skip
    print(f"leased {lease.epoch}", flush=True)
    if mode != "lease":
        for call, _ in CRASH_STEPS:
            call(store, lease)
            print("done", flush=True)
    if mode == "close":
        store.close()
    else:
        time.sleep(TTL)  # killed before it wakes


def a_run(**changes: Any) -> RunRecord:
    """A recorded run of :data:`SCOPE` on :data:`AUDIENCE`, with ``changes``."""
    start = datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=timezone.utc)
    fields: dict[str, Any] = {
        "id": new_run_id(), "kind": "sync", "provider": PROVIDER, "scope": SCOPE,
        "audience": AUDIENCE, "started_at": start, "ended_at": start + timedelta(seconds=2.5),
        "outcome": "partial", "counts": {"applied": 1, "failed": 1, "unknown": 0},
        "error_type": None, "parent": None, "journalled": True,
    }  # fmt: skip
    fields.update(changes)
    return RunRecord(**fields)


def summary(entries: Mapping[str, Entry]) -> collections.Counter[tuple[str, str]]:
    """How many entries have each (fingerprint, status): what a failed crash test shows."""
    return collections.Counter((e.fingerprint, e.status) for e in entries.values())


class DictStore(StateStore):
    """The whole contract in a few dicts, in one process: what a store of your own provides.
    ``DictStore(of=store)`` is another client of ``store`` (another "process")."""

    def __init__(self, of: DictStore | None = None) -> None:
        self._lock: threading.Lock = threading.Lock() if of is None else of._lock
        self.rows: dict[tuple[str, str], dict[str, Entry]] = {} if of is None else of.rows
        #: key → (owner, expiry on time.monotonic(), epoch); a released lease has expired.
        self.leases: dict[str, tuple[str, float, int]] = {} if of is None else of.leases
        self.checkpoints: dict[str, str] = {} if of is None else of.checkpoints
        #: run id → (its record, its outcomes by id).
        self.history: dict[str, tuple[RunRecord, dict[str, RunOutcome]]] = (
            {} if of is None else of.history
        )

    def iter_entries(
        self, scope: str, audience: str, *, after: str | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[tuple[str, Entry]]:
        last = "" if after is None else after
        while True:
            with self._lock:
                rows = self.rows.get((scope, audience), {})
                page = sorted((k, e) for k, e in rows.items() if k > last)[:page_size]
            yield from page
            if len(page) < page_size:
                return
            last = page[-1][0]

    def _write(self, scope: str, audience: str, fence: Lease | None) -> dict[str, Entry]:
        """The entries of an audience to change (call with the lock held), once ``fence`` is
        checked."""
        if fence is not None:
            owner, expires, epoch = self.leases.get(fence.key, ("", 0.0, 0))
            if (owner, epoch) != (fence.owner, fence.epoch) or expires <= time.monotonic():
                raise FencingError("dicts", f"the lease on {fence.key} was lost")
        return self.rows.setdefault((scope, audience), {})

    def intend(self, scope: str, audience: str, writes: Iterable[tuple[str, str]], *,
               fence: Lease | None = None) -> None:  # fmt: skip
        entries = [(k, Entry(fp, "intended")) for k, fp in writes]
        with self._lock:
            self._write(scope, audience, fence).update(entries)

    def accept(self, scope: str, audience: str, handle: str, ids: Iterable[str], *,
               fence: Lease | None = None) -> None:  # fmt: skip
        ids = list(ids)
        with self._lock:
            rows = self._write(scope, audience, fence)
            for k in ids:
                if k in rows and not rows[k].settled:
                    rows[k] = Entry(rows[k].fingerprint, "accepted", handle)

    def mark(self, scope: str, audience: str, status: str, ids: Iterable[str], *,
             fence: Lease | None = None) -> None:  # fmt: skip
        check_mark(status)
        ids = list(ids)
        with self._lock:
            rows = self._write(scope, audience, fence)
            for k in ids:
                if k in rows and not rows[k].settled:
                    rows[k] = rows[k]._replace(status=status)

    def record(self, scope: str, audience: str, *,
               present: Mapping[str, str] | Iterable[tuple[str, str]] = (),
               absent: Iterable[str] = (), fence: Lease | None = None) -> None:  # fmt: skip
        items = list(present.items() if isinstance(present, Mapping) else present)
        gone = list(absent)
        with self._lock:
            rows = self._write(scope, audience, fence)
            rows.update((k, Entry(fp, "settled")) for k, fp in items)
            for k in gone:
                rows.pop(k, None)

    def forget_audience(self, scope: str, audience: str, *, fence: Lease | None = None) -> None:
        with self._lock:
            self._write(scope, audience, fence).clear()

    def claim_legacy(self, provider: str, scope: str) -> int:
        return 0  # a store of dicts never held audiencekit 0.1's rows

    def acquire_lease(self, key: str, owner: str, ttl: float) -> Lease:
        now = time.monotonic()
        with self._lock:
            holder, expires, epoch = self.leases.get(key, (owner, 0.0, 0))
            if holder != owner and expires > now and alive(holder):
                return Lease(key, holder, epoch, expires - now)
            if holder != owner or not epoch:  # it changes hands, or is taken for the first time
                epoch += 1
            self.leases[key] = (owner, now + ttl, epoch)
        return Lease(key, owner, epoch, ttl)

    def renew_lease(self, lease: Lease, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            owner, expires, epoch = self.leases.get(lease.key, ("", 0.0, 0))
            if (owner, epoch) != (lease.owner, lease.epoch) or expires <= now:
                return False
            self.leases[lease.key] = (owner, now + ttl, epoch)
        return True

    def release_lease(self, lease: Lease) -> None:
        with self._lock:
            owner, _, epoch = self.leases.get(lease.key, ("", 0.0, 0))
            if (owner, epoch) == (lease.owner, lease.epoch):
                self.leases[lease.key] = (owner, 0.0, epoch)  # expired: the epoch is kept

    def checkpoint(self, run: str) -> dict[str, Any] | None:
        with self._lock:
            text = self.checkpoints.get(run)
        return None if text is None else dict(json.loads(text))

    def save_checkpoint(self, run: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data)
        with self._lock:
            self.checkpoints[run] = text

    def clear_checkpoint(self, run: str) -> None:
        with self._lock:
            self.checkpoints.pop(run, None)

    def record_run(
        self, record: RunRecord, outcomes: Iterable[RunOutcome | tuple[Any, ...]] = ()
    ) -> None:
        rows = check_outcomes(outcomes)
        with self._lock:
            self.history[record.id] = (record, rows)

    def runs(
        self, scope: str | None = None, *, audience: str | None = None, limit: int = RUNS_LIMIT
    ) -> list[RunRecord]:
        with self._lock:
            found = [r for r, _ in self.history.values()
                     if scope in (None, r.scope) and audience in (None, r.audience)]  # fmt: skip
        return sorted(found, key=lambda r: (r.started_at, r.id), reverse=True)[:limit]

    def run(self, run_id: str, *, scope: str | None = None) -> RunRecord | None:
        with self._lock:
            found = [r for k, (r, _) in self.history.items()
                     if run_id and k.startswith(run_id) and scope in (None, r.scope)]  # fmt: skip
        return pick_run(run_id, found)

    def run_outcomes_page(self, run_id: str, after: str | None, limit: int) -> list[RunOutcome]:
        last = "" if after is None else after
        with self._lock:
            rows = self.history.get(run_id, (None, {}))[1]
            return sorted((o for k, o in rows.items() if k > last), key=lambda o: o.id)[:limit]


class StoreContract:
    """Tests every state store passes; subclass it and provide ``store_location``."""

    #: ``"module:name"`` of what opens a location (a function or a class taking it), here and
    #: in the crash tests' child process (which has this process's ``sys.path``); None for a
    #: store that lives in one process (the crash tests are skipped).
    opener: ClassVar[str | None] = "audiencekit.state:StateStore.open"

    def open_store(self, location: str) -> StateStore:
        """A new client of the store at ``location``, by :attr:`opener`."""
        if self.opener is None:
            raise NotImplementedError(f"{type(self).__name__} has no opener: override open_store")
        store: StateStore = load(self.opener)(location)
        return store

    def create_previous_store(
        self, location: str, scope: str, audience: str, settled: Mapping[str, str]
    ) -> None:
        """Write at ``location`` a store in the schema of this store's previous version,
        holding the ``settled`` entries (id → fingerprint) of ``audience`` under ``scope``
        (under the provider's name alone, for a version that knew no accounts). The default
        skips the test that opens it: a store with no previous schema."""
        pytest.skip(f"{type(self).__name__} has no previous schema (create_previous_store)")

    @pytest.fixture
    def connect(self, store_location: str) -> Iterator[Callable[[], StateStore]]:
        """Open a client of the test's store (closed at the end of the test)."""
        opened: list[StateStore] = []

        def connect() -> StateStore:
            opened.append(self.open_store(store_location))
            return opened[-1]

        yield connect
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, connect: Callable[[], StateStore]) -> StateStore:
        return connect()

    # -- opening --------------------------------------------------------------------------------

    def test_two_clients_of_one_location_are_one_store(
        self, connect: Callable[[], StateStore], store_location: str
    ) -> None:
        with self.open_store(store_location) as first, self.open_store(store_location) as second:
            assert first.entries(SCOPE, AUDIENCE) == {}
            first.record(SCOPE, AUDIENCE, present={"u1": "f1"})
            second.save_checkpoint("run", {"n": 1})
            assert second.entries(SCOPE, AUDIENCE) == {"u1": Entry("f1", "settled")}
            assert first.checkpoint("run") == {"n": 1}
        reopened = connect()  # what was written outlives its clients
        assert reopened.pushed(SCOPE, AUDIENCE) == {"u1": "f1"}
        assert reopened.checkpoint("run") == {"n": 1}

    # -- the journal ----------------------------------------------------------------------------

    def test_an_entry_goes_from_intended_to_accepted_to_settled(self, store: StateStore) -> None:
        store.intend(SCOPE, AUDIENCE, [("u1", "f1"), ("u2", "f2"), ("u3", ABSENT)])
        assert store.entries(SCOPE, AUDIENCE) == {
            "u1": Entry("f1", "intended"),
            "u2": Entry("f2", "intended"),
            "u3": Entry(ABSENT, "intended"),
        }
        store.accept(SCOPE, AUDIENCE, "h1", ["u1", "u2", "u3"])
        assert store.entries(SCOPE, AUDIENCE) == {
            "u1": Entry("f1", "accepted", "h1"),
            "u2": Entry("f2", "accepted", "h1"),
            "u3": Entry(ABSENT, "accepted", "h1"),
        }
        store.mark(SCOPE, AUDIENCE, "unknown", ["u2"])
        assert store.entries(SCOPE, AUDIENCE)["u2"] == Entry("f2", "unknown", "h1")
        store.record(SCOPE, AUDIENCE, present={"u1": "f1", "u2": "f2"}, absent=["u3"])
        settled = store.entries(SCOPE, AUDIENCE)  # settled: confirmed, no handle to poll
        assert settled == {"u1": Entry("f1", "settled"), "u2": Entry("f2", "settled")}
        assert all(e.settled for e in settled.values())

    def test_intend_replaces_whatever_the_entry_said(self, store: StateStore) -> None:
        store.record(SCOPE, AUDIENCE, present={"settled": "f0"})
        store.intend(SCOPE, AUDIENCE, [("accepted", "f0"), ("unknown", "f0")])
        store.accept(SCOPE, AUDIENCE, "h1", ["accepted", "unknown"])
        store.mark(SCOPE, AUDIENCE, "unknown", ["unknown"])
        store.intend(SCOPE, AUDIENCE, [("settled", "f1"), ("accepted", ABSENT), ("unknown", "f1")])
        assert store.entries(SCOPE, AUDIENCE) == {
            "settled": Entry("f1", "intended"),
            "accepted": Entry(ABSENT, "intended"),
            "unknown": Entry("f1", "intended"),
        }

    def test_accept_and_mark_leave_settled_entries_and_ids_without_an_entry_alone(
        self, store: StateStore
    ) -> None:
        store.record(SCOPE, AUDIENCE, present={"done": "f0"})
        store.intend(SCOPE, AUDIENCE, [("sent", "f1")])
        store.accept(SCOPE, AUDIENCE, "h1", ["done", "sent", "nobody"])
        assert store.entries(SCOPE, AUDIENCE) == {
            "done": Entry("f0", "settled"),
            "sent": Entry("f1", "accepted", "h1"),
        }
        for status in ("unknown", "failed"):
            store.mark(SCOPE, AUDIENCE, status, ["done", "sent", "nobody"])
            entries = store.entries(SCOPE, AUDIENCE)
            assert set(entries) == {"done", "sent"}
            assert entries["done"] == Entry("f0", "settled")
            assert entries["sent"] == Entry("f1", status, "h1")  # still under its handle

    @pytest.mark.parametrize("status", ["settled", "intended", "accepted", "lost"])
    def test_mark_refuses_any_status_but_unknown_and_failed(
        self, store: StateStore, status: str
    ) -> None:
        store.intend(SCOPE, AUDIENCE, [("u1", "f1")])
        with pytest.raises(ValueError):  # noqa: PT011 - the contract names no message
            store.mark(SCOPE, AUDIENCE, status, ["u1"])
        assert store.entries(SCOPE, AUDIENCE) == {"u1": Entry("f1", "intended")}

    def test_record_settles_present_and_drops_absent_in_one_call(self, store: StateStore) -> None:
        store.intend(SCOPE, AUDIENCE, [("new", "f1"), ("removed", ABSENT), ("kept", "f0")])
        store.record(SCOPE, AUDIENCE, present={"kept": "f0"})
        store.record(SCOPE, AUDIENCE, present=[("new", "f1"), ("extra", "f2")],
                     absent=["removed", "never-there"])  # fmt: skip
        assert store.entries(SCOPE, AUDIENCE) == {
            "new": Entry("f1", "settled"),
            "extra": Entry("f2", "settled"),
            "kept": Entry("f0", "settled"),
        }
        store.record(SCOPE, AUDIENCE, absent=["new", "extra"])
        assert set(store.entries(SCOPE, AUDIENCE)) == {"kept"}

    def test_pushed_and_count_see_only_settled_present_entries(self, store: StateStore) -> None:
        store.record(SCOPE, AUDIENCE, present={"held": "f1", "also": "f2", "gone": ABSENT})
        store.intend(SCOPE, AUDIENCE, [("intended", "f3"), ("accepted", "f4"), ("unknown", "f5"),
                                       ("failed", "f6"), ("removing", ABSENT)])  # fmt: skip
        store.accept(SCOPE, AUDIENCE, "h1", ["accepted"])
        store.mark(SCOPE, AUDIENCE, "unknown", ["unknown"])
        store.mark(SCOPE, AUDIENCE, "failed", ["failed"])
        assert store.pushed(SCOPE, AUDIENCE) == {"held": "f1", "also": "f2"}
        assert store.count(SCOPE, AUDIENCE) == 2
        assert store.pushed(SCOPE, OTHER_AUDIENCE) == {}
        assert store.count(SCOPE, OTHER_AUDIENCE) == 0

    def test_forget_audience_drops_every_entry_of_that_audience(self, store: StateStore) -> None:
        store.record(SCOPE, AUDIENCE, present={"u1": "f1"})
        store.intend(SCOPE, AUDIENCE, [("u2", "f2")])
        store.forget_audience(SCOPE, AUDIENCE)
        assert store.entries(SCOPE, AUDIENCE) == {}
        assert store.count(SCOPE, AUDIENCE) == 0
        store.forget_audience(SCOPE, "never-written")  # nothing to drop: no error

    def test_scopes_and_audiences_never_mix(self, connect: Callable[[], StateStore]) -> None:
        store, observer = connect(), connect()
        cells = [(s, a) for s in (SCOPE, OTHER_SCOPE) for a in (AUDIENCE, OTHER_AUDIENCE)]
        for scope, audience in cells:
            store.record(scope, audience, present=dict.fromkeys("abc", f"{scope}:{audience}"))
        seeded = {cell: observer.entries(*cell) for cell in cells}
        target, others = cells[0], cells[1:]
        writes: list[Write] = [
            lambda s, f: s.intend(*target, [("a", "x"), ("d", "x")]),
            lambda s, f: s.accept(*target, "h1", ["a", "b", "c", "d"]),
            lambda s, f: s.mark(*target, "failed", ["a", "b", "c", "d"]),
            lambda s, f: s.record(*target, present={"b": "y"}, absent=["c"]),
            lambda s, f: s.forget_audience(*target),
        ]
        for write in writes:
            write(store, None)
            assert {cell: observer.entries(*cell) for cell in others} == {
                cell: seeded[cell] for cell in others
            }
        assert observer.entries(*target) == {}
        assert observer.pushed(*cells[1]) == dict.fromkeys("abc", f"{SCOPE}:{OTHER_AUDIENCE}")
        assert observer.count(*cells[2]) == 3

    # -- streaming ------------------------------------------------------------------------------

    def test_entries_stream_in_code_point_order_of_ids(self, store: StateStore) -> None:
        store.intend(SCOPE, AUDIENCE, [(k, f"f-{k}") for k in AWKWARD_IDS])
        expected = [(k, Entry(f"f-{k}", "intended")) for k in sorted(AWKWARD_IDS)]
        assert list(store.iter_entries(SCOPE, AUDIENCE)) == expected
        assert list(store.iter_entries(SCOPE, AUDIENCE, page_size=2)) == expected

    @pytest.mark.parametrize("page_size", [1, 3, 5, 10, 11])
    def test_entries_are_read_page_by_page_each_once(
        self, store: StateStore, page_size: int
    ) -> None:
        ids = [f"u{i}" for i in range(10)]
        store.record(SCOPE, AUDIENCE, present=dict.fromkeys(ids, "f"))
        store.record(SCOPE, OTHER_AUDIENCE, present={"u0": "f"})
        read = [k for k, _ in store.iter_entries(SCOPE, AUDIENCE, page_size=page_size)]
        assert read == sorted(ids)

    def test_unsettled_lists_the_accepted_writes_still_to_wait_for(self, store: StateStore) -> None:
        store.intend(SCOPE, AUDIENCE, [("a", "fa"), ("b", "fb"), ("c", ""), ("d", "fd")])
        store.accept(SCOPE, AUDIENCE, "h1", ["a", "b"])
        store.accept(SCOPE, AUDIENCE, "h2", ["c"])
        store.record(SCOPE, AUDIENCE, present={"b": "fb"})  # settled: nothing to wait for
        store.intend(SCOPE, OTHER_AUDIENCE, [("a", "fa")])
        store.accept(SCOPE, OTHER_AUDIENCE, "h3", ["a"])
        assert store.unsettled(SCOPE, AUDIENCE) == [("a", "fa", "h1"), ("c", "", "h2")]
        # The same as the contract's own reading of every entry.
        assert store.unsettled(SCOPE, AUDIENCE) == StateStore.unsettled(store, SCOPE, AUDIENCE)

    def test_entries_stream_from_the_first_id_after_the_given_one(self, store: StateStore) -> None:
        store.intend(SCOPE, AUDIENCE, [(k, "f") for k in AWKWARD_IDS])
        ordered = sorted(AWKWARD_IDS)
        for after in ("a", "a00", "é", "B", "z"):  # present or not
            read = [k for k, _ in store.iter_entries(SCOPE, AUDIENCE, after=after, page_size=3)]
            assert read == [k for k in ordered if k > after], after
        assert list(store.iter_entries(SCOPE, AUDIENCE, after="😀")) == []

    # -- leases ---------------------------------------------------------------------------------

    def test_a_lease_is_taken_renewed_and_released(self, connect: Callable[[], StateStore]) -> None:
        store, other = connect(), connect()
        me, them = lease_owner("me"), lease_owner("them")
        lease = store.acquire_lease("k", me, TTL)
        assert lease.held_by(me)
        assert (lease.key, lease.owner) == ("k", me)
        assert 0 < lease.expires_in <= TTL
        again = store.acquire_lease("k", me, TTL)  # the same owner: renewed
        assert again.held_by(me)
        assert again.epoch == lease.epoch
        assert store.renew_lease(lease, TTL)
        assert not other.acquire_lease("k", them, TTL).held_by(them)
        store.release_lease(lease)
        assert other.acquire_lease("k", them, TTL).held_by(them)

    def test_a_live_lease_is_refused_to_another_owner_who_is_told_who_holds_it(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        me, them = lease_owner("me"), lease_owner("them")
        lease = store.acquire_lease("k", me, TTL)
        for client in (other, store):  # another process, or another run of this one
            refused = client.acquire_lease("k", them, 5.0)
            assert not refused.held_by(them)
            assert (refused.key, refused.owner, refused.epoch) == ("k", me, lease.epoch)
            assert 0 < refused.expires_in <= TTL
        assert other.acquire_lease("other-key", them, TTL).held_by(them)  # keys are apart
        assert store.renew_lease(lease, TTL)

    def test_an_expired_lease_is_taken_over_with_a_higher_epoch(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        me, them = lease_owner("me"), lease_owner("them")
        lease = store.acquire_lease("k", me, SHORT_TTL)
        time.sleep(EXPIRY)
        taken = other.acquire_lease("k", them, TTL)
        assert taken.held_by(them)
        assert taken.epoch > lease.epoch
        assert not store.renew_lease(lease, TTL)  # the old holder learns it lost the lease
        refused = store.acquire_lease("k", me, TTL)
        assert (refused.owner, refused.epoch) == (them, taken.epoch)
        assert other.renew_lease(taken, TTL)

    def test_an_expired_lease_cannot_be_renewed(self, store: StateStore) -> None:
        lease = store.acquire_lease("k", lease_owner("me"), SHORT_TTL)
        time.sleep(EXPIRY)
        assert not store.renew_lease(lease, TTL)

    def test_the_epoch_grows_only_when_the_lease_changes_hands(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        me, them = lease_owner("me"), lease_owner("them")
        first = store.acquire_lease("k", me, SHORT_TTL)
        assert store.renew_lease(first, SHORT_TTL)
        assert store.acquire_lease("k", me, SHORT_TTL).epoch == first.epoch  # renewed
        time.sleep(EXPIRY)
        assert store.acquire_lease("k", me, SHORT_TTL).epoch == first.epoch  # nobody took it
        time.sleep(EXPIRY)
        second = other.acquire_lease("k", them, SHORT_TTL)
        assert second.epoch > first.epoch
        time.sleep(EXPIRY)
        third = store.acquire_lease("k", me, TTL)
        assert third.held_by(me)
        assert third.epoch > second.epoch

    def test_the_epoch_grows_when_a_released_lease_is_taken_by_another_owner(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        first = store.acquire_lease("k", lease_owner("me"), TTL)
        store.release_lease(first)
        second = other.acquire_lease("k", lease_owner("them"), TTL)
        assert second.epoch > first.epoch

    def test_a_release_by_anyone_but_the_holder_does_nothing(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        me, them, third = lease_owner("me"), lease_owner("them"), lease_owner("third")
        old = store.acquire_lease("k", me, SHORT_TTL)
        time.sleep(EXPIRY)
        taken = other.acquire_lease("k", them, TTL)
        store.release_lease(old)  # the holder before the takeover
        store.release_lease(Lease("k", third, taken.epoch, TTL))  # never a holder
        refused = store.acquire_lease("k", third, TTL)
        assert (refused.owner, refused.epoch) == (them, taken.epoch)
        assert other.renew_lease(taken, TTL)

    def test_a_lease_whose_owner_is_gone_from_this_host_is_taken_over(
        self, store: StateStore
    ) -> None:
        with subprocess.Popen([sys.executable, "-c", ""]) as gone:
            gone.wait(30)
        dead = f"{socket.gethostname()}:{gone.pid}:run"
        held = store.acquire_lease("k", dead, TTL)
        taken = store.acquire_lease("k", lease_owner("me"), TTL)
        assert taken.held_by(lease_owner("me"))
        assert taken.epoch > held.epoch

    # -- fencing --------------------------------------------------------------------------------

    @pytest.mark.parametrize("write", list(FENCED_WRITES))
    def test_a_write_fenced_by_a_lease_taken_over_is_refused_and_writes_nothing(
        self, connect: Callable[[], StateStore], write: str
    ) -> None:
        store, other = connect(), connect()
        call, effect = FENCED_WRITES[write]
        store.record(SCOPE, AUDIENCE, present={"m1": "old"})
        store.intend(SCOPE, AUDIENCE, [("m2", "old")])
        assert other.entries(SCOPE, AUDIENCE) == FENCE_SEED
        stale = store.acquire_lease("k", lease_owner("paused"), SHORT_TTL)
        time.sleep(EXPIRY)
        current = other.acquire_lease("k", lease_owner("next"), TTL)
        with pytest.raises(FencingError):
            call(store, stale)
        assert other.entries(SCOPE, AUDIENCE) == FENCE_SEED
        call(other, current)
        assert store.entries(SCOPE, AUDIENCE) == effect

    @pytest.mark.parametrize("write", list(FENCED_WRITES))
    def test_a_write_fenced_by_a_live_lease_lands(self, store: StateStore, write: str) -> None:
        call, effect = FENCED_WRITES[write]
        store.record(SCOPE, AUDIENCE, present={"m1": "old"})
        store.intend(SCOPE, AUDIENCE, [("m2", "old")])
        call(store, store.acquire_lease("k", lease_owner("me"), TTL))
        assert store.entries(SCOPE, AUDIENCE) == effect

    def test_a_write_fenced_by_an_expired_or_released_lease_is_refused(
        self, store: StateStore
    ) -> None:
        expired = store.acquire_lease("k", lease_owner("me"), SHORT_TTL)
        released = store.acquire_lease("other-key", lease_owner("me"), TTL)
        store.release_lease(released)
        time.sleep(EXPIRY)
        for lease in (expired, released):
            with pytest.raises(FencingError):
                store.intend(SCOPE, AUDIENCE, [("u1", "f1")], fence=lease)
        assert store.entries(SCOPE, AUDIENCE) == {}

    # -- checkpoints ----------------------------------------------------------------------------

    def test_a_checkpoint_is_saved_replaced_and_cleared(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        assert store.checkpoint("run") is None
        data = {"n": 3, "x": 0.5, "text": "é😀", "none": None, "yes": True,
                "ids": ["a", 1, None], "nested": {"deep": [{}, {"k": [False]}]}}  # fmt: skip
        store.save_checkpoint("run", data)
        store.save_checkpoint("another", {"n": 0})
        assert other.checkpoint("run") == data
        store.save_checkpoint("run", {"n": 4})  # replaced, not merged
        assert other.checkpoint("run") == {"n": 4}
        other.clear_checkpoint("run")
        other.clear_checkpoint("never-saved")
        assert store.checkpoint("run") is None
        assert store.checkpoint("another") == {"n": 0}

    # -- run history ----------------------------------------------------------------------------

    def test_a_run_is_recorded_with_its_outcomes_and_read_back(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        record = a_run(counts={"applied": 7, "failed": 2, "unknown": 1, "added": 10})
        link = Url("https://example.com/é")
        outcomes = [
            RunOutcome("u2", "add", "failed", "BadRequestError 400 [BAD_ATTR]",
                       {"plan": "gold", "rank": 3, "ok": True, "x": 0.5, "tags": ["a", "b"],
                        "site": link, "born": datetime(2001, 2, 3, 4, 5, 6, tzinfo=timezone.utc)}),
            ("u1", "remove", "unknown", "APITimeoutError"),
            RunOutcome("é", "add", "failed", "BadRequestError 400", None),
        ]  # fmt: skip
        store.record_run(record, outcomes)
        assert other.run(record.id) == record
        assert other.runs(SCOPE) == [record]
        found = list(other.run_outcomes(record.id))
        assert [o.id for o in found] == ["u1", "u2", "é"]  # in code-point order
        assert found[0] == RunOutcome("u1", "remove", "unknown", "APITimeoutError", None)
        assert found[1].attributes == outcomes[0][4]
        assert isinstance(found[1].attributes["site"], Url)  # type: ignore[index]
        assert isinstance(found[1].attributes["born"], datetime)  # type: ignore[index]
        assert found[2] == outcomes[2]

    def test_runs_are_listed_newest_first_by_scope_and_audience(self, store: StateStore) -> None:
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        made = [a_run(started_at=start + timedelta(minutes=i), scope=scope, audience=audience)
                for i, (scope, audience) in enumerate(
                    [(SCOPE, AUDIENCE), (OTHER_SCOPE, AUDIENCE), (SCOPE, OTHER_AUDIENCE),
                     (SCOPE, AUDIENCE)])]  # fmt: skip
        for record in reversed(made):
            store.record_run(record)
        assert store.runs(SCOPE) == [made[3], made[2], made[0]]
        assert store.runs(OTHER_SCOPE) == [made[1]]  # two accounts never see each other's runs
        assert store.runs(SCOPE, audience=AUDIENCE) == [made[3], made[0]]
        assert store.runs(SCOPE, limit=1) == [made[3]]
        assert store.runs() == made[::-1]
        assert store.runs("batch/nobody") == []
        assert store.run(made[1].id, scope=SCOPE) is None  # another scope's run is not found
        assert store.run(made[1].id, scope=OTHER_SCOPE) == made[1]

    def test_a_run_is_found_by_a_unique_prefix_of_its_id(self, store: StateStore) -> None:
        first = a_run(id="abc123" + "0" * 26)
        second = a_run(id="abc456" + "0" * 26)
        short = a_run(id="abc")
        for record in (first, second, short):
            store.record_run(record)
        assert store.run("abc1") == first
        assert store.run("abc4") == second
        assert store.run("abc") == short  # an exact id wins over the ids it starts
        assert store.run("abd") is None
        assert store.run("") is None
        assert store.run("%") is None  # no pattern characters
        assert store.run("_") is None
        store.record_run(a_run(id="abc789" + "0" * 26))
        with pytest.raises(RunHistoryError) as caught:
            store.run("ab")
        assert caught.value.candidates == tuple(sorted(
            [first.id, second.id, "abc789" + "0" * 26, "abc"]))  # fmt: skip

    def test_a_run_recorded_again_replaces_its_record_and_outcomes(self, store: StateStore) -> None:
        record = a_run(outcome="interrupted")
        store.record_run(record, [("u1", "add", "failed", "X"), ("u2", "add", "failed", "X")])
        again = attrs.evolve(record, outcome="partial", counts={"applied": 1})
        store.record_run(again, [("u2", "remove", "unknown", "Y")])
        assert store.run(record.id) == again
        assert list(store.run_outcomes(record.id)) == [RunOutcome("u2", "remove", "unknown", "Y")]

    def test_bad_outcomes_are_refused_before_anything_is_written(self, store: StateStore) -> None:
        record = a_run()
        for bad in (("u1", "replace", "failed", "X"), ("u1", "add", "settled", "X")):
            with pytest.raises(ValueError, match=r"not '(replace|settled)'"):
                store.record_run(record, [("u0", "add", "failed", "X"), bad])
        assert store.run(record.id) is None

    def test_outcomes_are_read_page_by_page_each_once(self, store: StateStore) -> None:
        record = a_run()
        ids = [f"m{i:05d}" for i in range(2_500)] + AWKWARD_IDS
        store.record_run(record, ((k, "add", "failed", "X") for k in ids))  # a generator
        pages: list[int] = []
        page_of = store.run_outcomes_page

        def counted(run_id: str, after: str | None, limit: int) -> list[RunOutcome]:
            pages.append(limit)
            return page_of(run_id, after, limit)

        store.run_outcomes_page = counted  # type: ignore[method-assign]
        found = [o.id for o in store.run_outcomes(record.id, page_size=1_000)]
        assert found == sorted(ids)
        assert len(pages) == 3
        assert list(store.run_outcomes("no-such-run")) == []

    def test_100000_outcomes_are_recorded_in_bulk(self, store: StateStore) -> None:
        """Not a timing test (benchmarks/ has it): a record of 100,000 ids completes and reads
        back whole."""
        record = a_run(counts={"failed": 100_000})
        store.record_run(record, ((f"u{i:06d}", "add", "failed", "BadRequestError 400",
                                   {"rank": i}) for i in range(100_000)))  # fmt: skip
        found = list(store.run_outcomes(record.id))
        assert len(found) == 100_000
        assert found[-1] == RunOutcome("u099999", "add", "failed", "BadRequestError 400",
                                       {"rank": 99_999})  # fmt: skip

    # -- two writers ----------------------------------------------------------------------------

    def test_writers_in_threads_through_two_clients_lose_no_write(
        self, connect: Callable[[], StateStore]
    ) -> None:
        clients = [connect(), connect()]
        cells = [(s, a) for s in (SCOPE, OTHER_SCOPE) for a in (AUDIENCE, OTHER_AUDIENCE)]
        rounds, size = 20, 50
        start = threading.Barrier(len(cells))
        errors: list[BaseException] = []

        def writer(store: StateStore, scope: str, audience: str) -> None:
            try:
                lease = store.acquire_lease(f"{scope}:{audience}", lease_owner(audience), TTL)
                start.wait(30)
                for r in range(rounds):
                    ids = [f"{r}-{i}" for i in range(size)]
                    store.intend(scope, audience, [(k, scope) for k in ids], fence=lease)
                    store.accept(scope, audience, f"h{r}", ids, fence=lease)
                    store.record(scope, audience, present=dict.fromkeys(ids, scope), fence=lease)
            except BaseException as exc:  # reported by the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(clients[i % 2], *cell))
                   for i, cell in enumerate(cells)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        for scope, audience in cells:
            assert clients[0].pushed(scope, audience) == {
                f"{r}-{i}": scope for r in range(rounds) for i in range(size)
            }

    # -- crashes --------------------------------------------------------------------------------

    def run_child(self, location: str, mode: str, kill_after: int, delay: float = 0.0) -> int:
        """Run :func:`child` on ``location`` and SIGKILL it ``delay`` seconds after it printed
        ``kill_after`` ``done`` lines (at once: before its next call, or just in; later: inside
        it, on a fast store); the epoch of its lease."""
        if self.opener is None:
            pytest.skip(f"{type(self).__name__} lives in one process (opener is None)")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [sys.executable, "-m", __name__, self.opener, location, mode]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) as process:  # fmt: skip
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(kill_after + 1)]
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            _, errors = process.communicate(timeout=30)
        assert all(lines), errors[-3000:]  # it got that far
        return int(lines[0].split()[1])

    @pytest.mark.parametrize("delay", [0.0, 0.002])
    @pytest.mark.parametrize("kill_after", range(len(CRASH_STEPS)))
    def test_a_process_killed_between_any_two_calls_leaves_a_state_the_contract_allows(
        self, connect: Callable[[], StateStore], store_location: str, kill_after: int, delay: float
    ) -> None:
        epoch = self.run_child(store_location, "journal", kill_after, delay)
        store = connect()  # opens without error
        found: Snapshot = (store.entries(SCOPE, AUDIENCE), store.checkpoint(_RUN))
        states: list[Snapshot] = [({}, None), *(after for _, after in CRASH_STEPS)]
        allowed = states[kill_after:]  # the calls it made, and maybe some of the next
        assert found in allowed, (summary(found[0]), found[1] and list(found[1]))
        taken = store.acquire_lease(AUDIENCE, lease_owner("next"), TTL)  # its owner is gone
        assert taken.held_by(lease_owner("next"))
        assert taken.epoch > epoch
        store.record(SCOPE, AUDIENCE, present={"after": "f"}, fence=taken)
        assert store.pushed(SCOPE, AUDIENCE)["after"] == "f"

    @pytest.mark.parametrize("delay", [0.0, 0.001, 0.002, 0.004])
    def test_a_process_killed_while_it_closes_the_store_leaves_every_call_made(
        self, connect: Callable[[], StateStore], store_location: str, delay: float
    ) -> None:
        self.run_child(store_location, "close", len(CRASH_STEPS), delay)
        store = connect()  # opens without error
        found: Snapshot = (store.entries(SCOPE, AUDIENCE), store.checkpoint(_RUN))
        assert found == CRASH_STEPS[-1][1]

    def test_a_lease_of_a_killed_process_is_taken_over_after_its_ttl(
        self, connect: Callable[[], StateStore], store_location: str
    ) -> None:
        epoch = self.run_child(store_location, "lease", 0)
        time.sleep(EXPIRY)
        taken = connect().acquire_lease(AUDIENCE, lease_owner("next"), TTL)
        assert taken.held_by(lease_owner("next"))
        assert taken.epoch > epoch

    # -- older stores ---------------------------------------------------------------------------

    def test_claim_legacy_on_a_store_without_legacy_rows_changes_nothing(
        self, connect: Callable[[], StateStore]
    ) -> None:
        store, other = connect(), connect()
        store.record(SCOPE, AUDIENCE, present={"u1": "f1"})
        store.intend(OTHER_SCOPE, AUDIENCE, [("u2", "f2")])
        before = {s: other.entries(s, AUDIENCE) for s in (SCOPE, OTHER_SCOPE)}
        assert store.claim_legacy(PROVIDER, f"{PROVIDER}/newcomer") == 0
        assert store.claim_legacy("dexatel", "dexatel/newcomer") == 0
        assert {s: other.entries(s, AUDIENCE) for s in (SCOPE, OTHER_SCOPE)} == before
        assert other.entries(f"{PROVIDER}/newcomer", AUDIENCE) == {}

    def test_a_store_of_the_previous_schema_opens_with_its_rows(
        self, connect: Callable[[], StateStore], store_location: str
    ) -> None:
        kept = {"u1": "f1", "u2": "f2", "é": "f3"}
        self.create_previous_store(store_location, SCOPE, AUDIENCE, kept)
        store, other = connect(), connect()
        assert store.claim_legacy(PROVIDER, SCOPE) in (0, len(kept))  # 0: it knew accounts
        assert other.claim_legacy(PROVIDER, OTHER_SCOPE) == 0
        assert other.entries(SCOPE, AUDIENCE) == {k: Entry(fp, "settled") for k, fp in kept.items()}
        lease = store.acquire_lease(AUDIENCE, lease_owner("me"), TTL)
        store.intend(SCOPE, AUDIENCE, [("u4", "f4")], fence=lease)
        assert other.pushed(SCOPE, AUDIENCE) == kept
        record = a_run()  # the upgraded store keeps a run history
        store.record_run(record, [("u4", "add", "failed", "X", {"plan": "gold"})])
        assert other.runs(SCOPE) == [record]
        assert [o.id for o in other.run_outcomes(record.id)] == ["u4"]


if __name__ == "__main__":
    child(*sys.argv[1:])
