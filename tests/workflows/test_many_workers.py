"""Many workers, one audience, on either store (two clients of one store stand for two hosts):
exactly one writes at a time, a dead holder's lease is taken over after its time, and a worker
paused past its lease writes nothing more (fencing). The same with real processes against
PostgreSQL: tests/state/test_many_workers_pg.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from audiencekit import AudienceBusyError, Member
from audiencekit.errors import FencingError
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import SqliteStateStore, StateStore, fingerprint, scope_of
from audiencekit.state.postgres import PostgresStateStore
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import sync

from ..conftest import Connect

pytestmark = pytest.mark.anyio

#: Opens a client of the test's store (``lease_ttl=`` passed on).
Open = Callable[..., StateStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    """Clients of one store: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite3"
        return lambda **options: SqliteStateStore(path, **options)
    url = request.getfixturevalue("postgres_url")
    return lambda **options: PostgresStateStore(url, **options)


def people(ids: range, plan: str = "gold") -> list[Member]:
    return [Member(f"u{i}", attributes={"plan": plan}) for i in ids]


def updates(emulators: EmulatorServer) -> int:
    return sum(1 for r in emulators.batch.requests if r.path.endswith("/update"))


def take_once_expired(store: StateStore, key: str, owner: str) -> None:
    """Take ``key`` for ``owner`` as soon as the store's own clock says its lease ran out."""
    deadline = time.monotonic() + 10
    while not store.acquire_lease(key, owner, 30).held_by(owner):
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.05)


async def test_a_worker_paused_past_its_lease_is_fenced_and_sends_nothing_more(
    connect: Connect, open_store: Open, emulators: EmulatorServer
) -> None:
    worker = connect(BatchBackend, rate_limit=None, concurrency=1, chunk_size=1_000)
    await worker.create_audience("shared")
    key = f"{scope_of(worker)}:shared"
    paused: dict[str, Any] = {}
    with open_store(lease_ttl=0.6) as mine, open_store() as theirs:

        def pause_after_first_chunk(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not paused:
                # The whole process stalls (a GC pause, SIGSTOP) until another host takes over.
                take_once_expired(theirs, key, "other-host:1:t")
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
    connect: Connect, open_store: Open, emulators: EmulatorServer
) -> None:
    batch = connect(BatchBackend, rate_limit=None)
    await batch.create_audience("left")
    with open_store() as other, open_store() as store:
        key = f"{scope_of(batch)}:left"
        other.acquire_lease(key, "gone-host:4242:x", 0.5)  # it died there: no one renews it
        with pytest.raises(AudienceBusyError) as busy:
            await sync(batch, "left", people(range(10)), state=store)
        assert busy.value.holder == "gone-host:4242:x"
        assert not busy.value.lost
        await anyio.sleep(busy.value.expires_in + 0.1)  # as the store counts it
        report = await sync(batch, "left", people(range(10)), state=store)
        assert report.added == 10
    emulators.batch.apply_pending()
    assert set(emulators.batch.members("left")) == {f"u{i}" for i in range(10)}


async def test_two_clients_of_one_store_never_write_one_audience_at_once(
    connect: Connect, open_store: Open, emulators: EmulatorServer
) -> None:
    first, second = (connect(BatchBackend, rate_limit=None) for _ in range(2))
    await first.create_audience("one")
    with open_store() as mine, open_store() as theirs:
        outcomes: list[str] = []

        def try_second(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not outcomes:  # the first run holds the lease
                lease = theirs.acquire_lease(f"{scope_of(second)}:one", "h:2:second", 30)
                outcomes.append("refused" if not lease.held_by("h:2:second") else "taken")

        await sync(first, "one", people(range(25_000)), state=mine, on_progress=try_second)
        assert outcomes == ["refused"]
        final = people(range(5_000, 6_000), plan="silver")
        assert (await sync(second, "one", final, state=theirs)).result.ok
        assert mine.pushed(scope_of(first), "one") == {
            m.id: fingerprint(m.attributes) for m in final
        }
    emulators.batch.apply_pending()
    assert emulators.batch.members("one") == {m.id: dict(m.attributes) for m in final}
