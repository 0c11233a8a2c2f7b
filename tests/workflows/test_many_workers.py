"""Many workers, one audience: exactly one writes at a time, a dead holder's lease is taken
over after its time, and a worker paused past its lease writes nothing more (fencing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from audiencekit import AudienceBusyError, ChunkDone, Member, ProgressEvent
from audiencekit.errors import FencingError
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import SqliteStateStore, StateStore, scope_of
from audiencekit.sync import sync
from audiencekit.testing import EmulatorServer

from ..conftest import Connect

pytestmark = pytest.mark.anyio


def people(ids: range, plan: str = "gold") -> list[Member]:
    return [Member(f"u{i}", attributes={"plan": plan}) for i in ids]


def updates(emulators: EmulatorServer) -> int:
    return sum(1 for r in emulators.batch.requests if r.path.endswith("/update"))


async def test_a_worker_paused_past_its_lease_is_fenced_and_sends_nothing_more(
    connect: Connect, tmp_path: Path, emulators: EmulatorServer
) -> None:
    path = tmp_path / "s.sqlite3"
    worker = connect(BatchBackend, rate_limit=None, concurrency=1, chunk_size=1_000)
    await worker.create_audience("shared")
    key = f"{scope_of(worker)}:shared"
    paused: dict[str, Any] = {}
    with SqliteStateStore(path, lease_ttl=0.6) as mine, SqliteStateStore(path) as theirs:

        def pause_after_first_chunk(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not paused:
                time.sleep(0.7)  # the whole process stalls (a GC pause, SIGSTOP) past its lease
                taken = theirs.acquire_lease(key, "other-host:1:t", 30)  # another host takes it
                assert taken.held_by("other-host:1:t")
                paused["updates"] = updates(emulators)
                paused["entries"] = theirs.entries(scope_of(worker), "shared")

        with pytest.raises(FencingError) as caught:
            await sync(worker, "shared", people(range(10_000)), state=mine,
                       on_progress=pause_after_first_chunk)  # fmt: skip
        assert caught.value.lost
        assert updates(emulators) == paused["updates"]  # no chunk sent after the pause
        assert theirs.entries(scope_of(worker), "shared") == paused["entries"]  # nor written
        lease = theirs.acquire_lease(key, "other-host:1:t", 30)
        assert lease.held_by("other-host:1:t")  # the lease is still the other run's


async def test_a_lease_left_by_a_worker_on_another_host_is_taken_over_after_its_time(
    connect: Connect, tmp_path: Path, emulators: EmulatorServer
) -> None:
    batch = connect(BatchBackend, rate_limit=None)
    await batch.create_audience("left")
    with SqliteStateStore(tmp_path / "s.sqlite3") as store:
        key = f"{scope_of(batch)}:left"
        store.acquire_lease(key, "gone-host:4242:x", 0.5)  # it died there: no one renews it
        with pytest.raises(AudienceBusyError) as busy:
            await sync(batch, "left", people(range(10)), state=store)
        assert busy.value.holder == "gone-host:4242:x"
        assert not busy.value.lost
        await anyio.sleep(0.6)
        report = await sync(batch, "left", people(range(10)), state=store)
        assert report.added == 10
    emulators.batch.apply_pending()
    assert set(emulators.batch.members("left")) == {f"u{i}" for i in range(10)}


async def test_two_clients_of_one_store_never_write_one_audience_at_once(
    connect: Connect, tmp_path: Path, emulators: EmulatorServer
) -> None:
    path = tmp_path / "s.sqlite3"
    first, second = (connect(BatchBackend, rate_limit=None) for _ in range(2))
    await first.create_audience("one")
    stores: list[StateStore] = [SqliteStateStore(path), SqliteStateStore(path)]
    try:
        outcomes: list[str] = []

        def try_second(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not outcomes:  # the first run holds the lease
                lease = stores[1].acquire_lease(f"{scope_of(second)}:one", "h:2:second", 30)
                outcomes.append("refused" if not lease.held_by("h:2:second") else "taken")

        await sync(first, "one", people(range(25_000)), state=stores[0], on_progress=try_second)
        assert outcomes == ["refused"]
        final = people(range(5_000, 6_000), plan="silver")
        assert (await sync(second, "one", final, state=stores[1])).result.ok
    finally:
        for store in stores:
            store.close()
    emulators.batch.apply_pending()
    assert emulators.batch.members("one") == {m.id: dict(m.attributes) for m in final}
