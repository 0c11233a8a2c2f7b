"""The state store keeps the truth across crashes, unknown outcomes and concurrent runs.

Each test ends by comparing what the provider (the emulator) holds with what was wanted, and
the store with the provider: a run may be cut short anywhere, but the next one must converge
to the exact desired state.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from audiencekit import AudienceBusyError, Member, PollTimeoutError
from audiencekit.errors import FencingError, StateStoreVersionError
from audiencekit.options import PollPolicy
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import Entry, SqliteStateStore, StateStore, fingerprint, scope_of
from audiencekit.state.sqlite import SCHEMA_VERSION
from audiencekit.testing import EmulatorServer, FakeBackend, Fault, FaultPlan, Timing
from audiencekit.testing.store_contract import DictStore
from audiencekit.workflows import MigrationReport, migrate, sync
from audiencekit.workflows.journal import guarded

from ..conftest import Connect
from ..support import batch_scope

pytestmark = pytest.mark.anyio


def people(ids: Iterable[int], plan: str = "gold") -> list[Member]:
    return [Member(f"user-{i}", attributes={"plan": plan}) for i in ids]


def wanted(members: list[Member]) -> dict[str, dict[str, Any]]:
    return {m.id: dict(m.attributes) for m in members}


def exact(
    emulators: EmulatorServer, audience: str, state: StateStore, members: list[Member]
) -> None:
    """The provider holds exactly ``members``, and the store knows exactly that."""
    emulators.batch.apply_pending()  # what Batch accepted, it applies in the end
    assert emulators.batch.members(audience) == wanted(members)
    assert state.pushed(batch_scope(emulators), audience) == {
        m.id: fingerprint(m.attributes) for m in members
    }


def cancel_after(scope: anyio.CancelScope, done: int) -> Any:
    """A progress callback that cuts the run short (as a crash would) once ``done`` chunks
    were confirmed."""
    seen = 0

    def on_progress(event: ProgressEvent) -> None:
        nonlocal seen
        if isinstance(event, ChunkDone) and not event.pending:
            seen += 1
            if seen >= done:
                scope.cancel()

    return on_progress


# 1. the journal -------------------------------------------------------------------------------


async def test_a_sync_cut_short_after_batch_accepted_chunks_leaves_no_ghost(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("crash")
    with anyio.CancelScope() as scope:
        await sync(batch, "crash", people(range(30_000)), state=state,
                   on_progress=cancel_after(scope, 1))  # fmt: skip
    assert scope.cancel_called
    emulators.batch.apply_pending()
    assert len(emulators.batch.members("crash")) >= 10_000  # chunks Batch accepted and applied

    keep = people(range(100))
    report = await sync(batch, "crash", keep, state=state)
    assert report.result.ok
    exact(emulators, "crash", state, keep)


async def test_accepted_writes_left_unconfirmed_by_a_poll_timeout_are_reconciled(
    connect: Connect, state: StateStore, emulators: EmulatorServer
) -> None:
    impatient = connect(BatchBackend, poll=PollPolicy(max_wait=2, interval=0.5))
    await impatient.create_audience("slow")
    emulators.batch.config.index_polls = 1_000  # nothing gets confirmed in time
    with pytest.raises(PollTimeoutError):
        await sync(impatient, "slow", people(range(12_000)), state=state)
    assert state.count(batch_scope(emulators), "slow") == 0
    entries = state.entries(batch_scope(emulators), "slow").values()
    assert all(e.status == "accepted" and e.handle for e in entries)

    emulators.batch.config.index_polls = 1
    desired = people(range(6_000, 13_000), plan="silver")
    emulators.batch.requests.clear()
    patient = connect(BatchBackend)
    report = await sync(patient, "slow", desired, state=state)
    assert report.result.ok
    exact(emulators, "slow", state, desired)


async def test_an_unknown_outcome_stays_recorded_and_is_reconciled(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("unsure")
    # Batch applies the second update at once, but its answer never arrives in a usable form.
    emulators.batch.config.index_polls = 0
    lost = Fault.http_status(202, "POST */audiences/update", timing=Timing.AFTER, calls=[2])
    emulators.batch.set_faults(FaultPlan([lost]))
    first = await sync(batch, "unsure", people(range(20_000)), state=state,
                       raise_on_failure=False)  # fmt: skip
    assert len(first.result.unknown) == 10_000
    unsure = {
        k
        for k, e in state.entries(batch_scope(emulators), "unsure").items()
        if e.status == "unknown"
    }
    assert unsure == set(first.result.unknown)
    assert all(
        e.settled
        for k, e in state.entries(batch_scope(emulators), "unsure").items()
        if k not in unsure
    )

    emulators.batch.set_faults(FaultPlan())
    keep = people(range(5_000))  # the unknown ones are not wanted any more: they are removed
    assert (await sync(batch, "unsure", keep, state=state)).result.ok
    exact(emulators, "unsure", state, keep)


async def test_the_journal_is_written_off_the_event_loop_and_in_batches(
    batch: BatchBackend, tmp_path: Path, emulators: EmulatorServer
) -> None:
    loop_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []

    class Watched(SqliteStateStore):
        """Notes the thread each call of the interface runs on."""

    def watch(name: str) -> None:
        method = getattr(SqliteStateStore, name)

        def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.get_ident()))
            return method(self, *args, **kwargs)

        setattr(Watched, name, watched)

    for name in ("entries", "intend", "accept", "record", "acquire_lease", "renew_lease",
                 "release_lease", "pushed", "checkpoint", "save_checkpoint"):  # fmt: skip
        watch(name)

    await batch.create_audience("watched")
    with Watched(tmp_path / "s.sqlite3") as store:
        await sync(batch, "watched", people(range(25_000)), state=store)
    assert calls
    assert all(thread != loop_thread for _, thread in calls)
    names = [name for name, _ in calls]
    assert names.count("intend") <= 25_000 // 2_000 + 1
    assert names.count("record") <= 4  # three chunks confirmed, flushed together or apart


# 2. one writer per audience -------------------------------------------------------------------


async def test_a_second_sync_of_one_audience_fails_fast_and_changes_nothing(
    connect: Connect, tmp_path: Path, emulators: EmulatorServer
) -> None:
    first, second = connect(BatchBackend), connect(BatchBackend)
    await first.create_audience("shared")
    path = tmp_path / "s.sqlite3"
    with SqliteStateStore(path) as mine, SqliteStateStore(path) as theirs:  # two "processes"
        inside, go_on = anyio.Event(), anyio.Event()
        apply = first.apply

        async def held_apply(*args: Any, **kwargs: Any) -> Any:  # the first run, mid-way
            inside.set()
            await go_on.wait()
            return await apply(*args, **kwargs)

        first.apply = held_apply  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: sync(first, "shared", people(range(30_000)), state=mine))
            await inside.wait()
            with pytest.raises(AudienceBusyError, match=r"another run is writing batch/\w+:shared"):
                await sync(second, "shared", people(range(5)), state=theirs)
            with pytest.raises(AudienceBusyError):  # two tasks sharing one store: the same
                await sync(second, "shared", people(range(5)), state=mine)
            go_on.set()
        exact(emulators, "shared", mine, people(range(30_000)))
        assert (await sync(second, "shared", people(range(5)), state=theirs)).result.ok
        exact(emulators, "shared", theirs, people(range(5)))


def test_a_lease_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    with SqliteStateStore(tmp_path / "s.sqlite3") as store:
        host = os.uname().nodename
        me = f"{host}:{os.getpid()}:me"
        dead = f"{host}:{2**22 + 12345}:x"  # no such process
        assert store.acquire_lease("batch:a", dead, 3_600).held_by(dead)
        taken = store.acquire_lease("batch:a", me, 30)
        assert taken.held_by(me)
        assert taken.epoch == 2  # it changed hands
        other = "elsewhere:1:y"  # another host: only its expiry can free it
        assert store.acquire_lease("batch:b", other, 3_600).held_by(other)
        holder = store.acquire_lease("batch:b", me, 30)
        assert not holder.held_by(me)
        assert holder.owner == other
        assert 3_590 < holder.expires_in <= 3_600
        assert store.acquire_lease("batch:c", other, -1).held_by(other)  # already expired
        assert store.acquire_lease("batch:c", me, 30).held_by(me)


async def test_a_run_that_loses_its_lease_is_stopped(tmp_path: Path) -> None:
    async def stalled_run(store: SqliteStateStore) -> None:
        async with guarded(store, "batch", "stolen"):
            with store._lock:  # another run takes the lease over (ours looked stale)
                store._db.execute("UPDATE leases SET owner = 'elsewhere:1:z', epoch = epoch + 1")
            await anyio.sleep(5)  # cancelled at the next renewal, after 0.1 s

    with SqliteStateStore(tmp_path / "s.sqlite3", lease_ttl=0.3) as store:
        with pytest.raises(FencingError) as caught:
            await stalled_run(store)
        assert caught.value.lost
        assert isinstance(caught.value, AudienceBusyError)
        assert store.acquire_lease("batch:stolen", "elsewhere:1:z", 30).held_by("elsewhere:1:z")


# 3. migrate by identity ----------------------------------------------------------------------


async def test_a_resumed_migrate_carries_over_what_changed_at_the_source(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    source = await dexatel.create_audience("src", channel="SMS")
    numbers = [f"+1555{i:07d}" for i in range(6_000)]
    emulators.dexatel.seed_contacts(source.id, ({"number": n, "first_name": "a"} for n in numbers))
    with anyio.CancelScope() as scope:
        await migrate(dexatel, "src", batch, "dst", create=True, state=state,
                      on_progress=cancel_after(scope, 1))  # fmt: skip
    assert scope.cancel_called

    # While it was down: the first contacts are deleted, some change, some are new.
    contacts = {c.number: c async for c in dexatel.client.list_contacts(source.id)}
    for number in numbers[:300]:
        await dexatel.client.delete_contact(source.id, contacts[number].id)
    for number in numbers[300:400]:
        await dexatel.client.update_contact(source.id, contacts[number].id, first_name="b")
    emulators.dexatel.seed_contacts(source.id, ({"number": f"+1666{i:07d}"} for i in range(50)))

    report = await migrate(dexatel, "src", batch, "dst", create=True, state=state, resume=True)
    assert report.verified is True
    assert report.removed == 0 or report.removed == 300  # the deleted ones, if they had landed
    now = [m async for m in dexatel.iter_members(source.id)]
    assert len(now) == 5_750
    exact(emulators, "dst", state, now)

    emulators.batch.requests.clear()
    assert (await sync(batch, "dst", now, state=state)).sent == 0  # the next sync is exact


async def test_a_migrate_into_dexatel_leaves_exactly_the_source(
    dexatel: DexatelBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    source = await dexatel.create_audience("from", channel="SMS")
    target = await dexatel.create_audience("to", channel="SMS")
    emulators.dexatel.seed_contacts(source.id, ({"number": f"+1555{i:07d}"} for i in range(50)))
    emulators.dexatel.seed_contacts(target.id, [{"number": "+19990000000"}])  # not the source's
    report = await migrate(dexatel, "from", dexatel, "to", state=state)
    assert report.verified is True
    assert report.removed == 1
    held = {m.id async for m in dexatel.iter_members(target.id)}
    assert held == {f"+1555{i:07d}" for i in range(50)}
    assert set(state.pushed(scope_of(dexatel), target.id)) == held


def test_verified_compares_ids_not_sizes() -> None:
    def report(target_ids: str, expected_ids: str) -> MigrationReport:
        return MigrationReport(
            source_audience="s", target_audience="t", dry_run=False, resumed_from=0, read=2,
            sent=2, applied=2, failed={}, unknown={}, target_size=2, expected_size=2,
            target_ids=target_ids, expected_ids=expected_ids,
        )  # fmt: skip

    assert report("abc", "abc").verified is True
    assert report("abc", "abd").verified is False  # same size, other ids


# 4. the store: an interface, a versioned schema -----------------------------------------------


def test_an_audiencekit_0_1_store_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as db:  # the schema audiencekit 0.1 wrote (no user_version)
        db.executescript(
            "CREATE TABLE pushed (scope TEXT NOT NULL, audience TEXT NOT NULL, member TEXT NOT "
            "NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (scope, audience, member)) WITHOUT "
            "ROWID; CREATE TABLE checkpoints (run TEXT PRIMARY KEY, data TEXT NOT NULL, updated "
            "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);"
            "INSERT INTO pushed VALUES ('batch', 'a', 'u1', 'f1'), ('batch', 'a', 'u2', 'f2');"
        )
    db.close()
    with StateStore(old) as store:
        assert isinstance(store, SqliteStateStore)
        assert store.entries("batch", "a") == {}  # 0.1 knew no accounts: the rows wait
        assert store.claim_legacy("batch", "batch/first") == 2  # for the first to claim them
        assert store.claim_legacy("batch", "batch/second") == 0  # and only the first
        assert store.entries("batch/first", "a") == {
            "u1": Entry("f1", "settled"),
            "u2": Entry("f2", "settled"),
        }
        assert store.acquire_lease("batch:a", "h:1:t", 30).held_by("h:1:t")
    with sqlite3.connect(old) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StateStoreVersionError, match="newer audiencekit"):
        SqliteStateStore(old)


async def test_a_store_of_your_own_implements_the_interface(
    batch: BatchBackend, emulators: EmulatorServer
) -> None:
    store = DictStore()
    await batch.create_audience("own")
    await sync(batch, "own", people(range(15_000)), state=store)
    desired = people(range(10_000, 16_000), plan="x")
    emulators.batch.requests.clear()
    report = await sync(batch, "own", desired, state=store)
    assert (report.added, report.changed, report.removed) == (1_000, 5_000, 10_000)
    exact(emulators, "own", store, desired)
    released = store.acquire_lease(f"{batch_scope(emulators)}:own", "elsewhere:1:x", 30)
    assert released.held_by("elsewhere:1:x")


async def test_handles_that_never_confirm_do_not_stop_the_next_sync() -> None:
    fake = FakeBackend()
    fake.capabilities = attrs.evolve(fake.capabilities, list_members=False)  # a Batch-like one
    audience = await fake.create_audience("stale")
    store = SqliteStateStore()
    await fake.add_members(audience.id, [Member("x")])
    store.intend(scope_of(fake), audience.id, [("x", fingerprint({}))])
    store.accept(scope_of(fake), audience.id, "a-token-nobody-knows", ["x"])

    async def never_confirmed(*args: Any, **kwargs: Any) -> Any:
        raise PollTimeoutError("still indexing", pending=[], waited=600.0)

    fake.wait = never_confirmed  # type: ignore[method-assign]
    report = await sync(fake, audience.id, [Member("y")], state=store)
    assert (report.added, report.removed) == (1, 1)  # x may be there: it is removed
    assert set(fake.members(audience.id)) == {"y"}
    assert store.pushed(scope_of(fake), audience.id) == {"y": fingerprint({})}
