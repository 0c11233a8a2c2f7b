"""sync(): only the difference is sent, against the provider's listing or the state store."""

from __future__ import annotations

import anyio
import pytest

from audiencekit import ConfigurationError, Member, ValidationError
from audiencekit.errors import BadRequestError, NotFoundError
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore, scope_of
from audiencekit.testing import EmulatorServer, FakeBackend
from audiencekit.workflows import sync

pytestmark = pytest.mark.anyio


def updates(emulators: EmulatorServer) -> list[list[dict[str, object]]]:
    return [r.body["ids"] for r in emulators.batch.requests if r.path.endswith("/update")]


def people(n: int, plan: str = "gold") -> list[Member]:
    return [Member(f"user-{i}", attributes={"plan": plan, "rank": i}) for i in range(n)]


async def test_a_second_identical_sync_of_50000_sends_nothing(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("synced")
    first = await sync(batch, "synced", people(50_000), state=state)
    assert (first.added, first.changed, first.removed) == (50_000, 0, 0)
    assert len(updates(emulators)) == 5
    assert state.count(scope_of(batch), "synced") == 50_000

    emulators.batch.requests.clear()
    second = await sync(batch, "synced", people(50_000), state=state)
    assert second.sent == 0
    assert second.unchanged == 50_000
    assert updates(emulators) == []


async def test_only_the_difference_is_sent(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("diff")
    await sync(batch, "diff", people(1_000), state=state)
    desired = people(1_000)
    desired[10] = Member("user-10", attributes={"plan": "silver", "rank": 10})
    del desired[500:505]
    desired.append(Member("newcomer"))
    emulators.batch.requests.clear()

    report = await sync(batch, "diff", desired, state=state)
    assert (report.added, report.changed, report.removed) == (1, 1, 5)
    (sent,) = updates(emulators)
    assert sorted(op["id"] for op in sent) == sorted(
        ["newcomer", "user-10"] + [f"user-{i}" for i in range(500, 505)]
    )
    held = emulators.batch.members("diff")
    assert len(held) == 996
    assert held["user-10"] == {"plan": "silver", "rank": 10}


async def test_sync_against_a_listing_backend_needs_no_state(
    dexatel: DexatelBackend, emulators: EmulatorServer
) -> None:
    audience = await dexatel.create_audience("listed", channel="SMS")
    desired = [Member(f"+1555{i:07d}", attributes={"first_name": f"n{i}"}) for i in range(300)]
    first = await sync(dexatel, audience.id, desired)
    assert first.added == 300
    emulators.dexatel.requests.clear()
    second = await sync(dexatel, audience.id, desired)
    assert second.sent == 0
    assert [r for r in emulators.dexatel.requests if r.method != "GET"] == []
    third = await sync(dexatel, audience.id, [*desired[:250], Member("+15559999999")])
    assert (third.added, third.removed) == (1, 50)


async def test_sync_needs_a_state_store_where_members_cannot_be_listed(
    batch: BatchBackend,
) -> None:
    with pytest.raises(ConfigurationError, match="StateStore"):
        await sync(batch, "any", [Member("a")])


async def test_bad_members_are_refused_before_anything_is_sent(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("strict")
    emulators.batch.requests.clear()
    with pytest.raises(ValidationError) as caught:
        await sync(batch, "strict", [Member("ok"), Member("bad", attributes={"x": object()})],
                   state=state)  # fmt: skip
    assert caught.value.ids == ("bad",)
    assert emulators.batch.requests == []


async def test_after_an_interrupted_sync_the_rerun_counts_never_sent_ids_as_added(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("cut")
    batch.concurrency = 1  # one chunk in flight: the cancel leaves most ids never sent
    with anyio.CancelScope() as scope:

        def cut_after_first_chunk(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not event.pending:
                scope.cancel()

        await sync(batch, "cut", people(30_000), state=state, on_progress=cut_after_first_chunk)
    assert scope.cancel_called
    emulators.batch.apply_pending()
    before = len(emulators.batch.members("cut"))
    assert 0 < before < 30_000

    emulators.batch.requests.clear()
    report = await sync(batch, "cut", people(30_000), state=state)
    sent = [op["id"] for ids in updates(emulators) for op in ids]
    assert report.changed == 0  # nothing was held with other attributes
    assert report.added == len(sent) == 30_000 - report.unchanged
    assert report.applied == {"added": report.added, "changed": 0, "removed": 0}
    assert len(emulators.batch.members("cut")) == 30_000


async def test_what_was_applied_is_counted_by_kind_when_some_ids_fail() -> None:
    fake = FakeBackend()
    made = await fake.create_audience("kinds")
    await sync(fake, made.id, people(100))
    desired = [*people(90), Member("bad-one"), Member("good-one")]
    desired[0] = Member("user-0", attributes={"plan": "silver", "rank": 0})
    for member_id in ("bad-one", "user-0", "user-95"):
        fake.fail_id(member_id, BadRequestError("refused", provider="fake", status=400))
    report = await sync(fake, made.id, desired, raise_on_failure=False)
    assert (report.added, report.changed, report.removed) == (2, 1, 10)
    assert set(report.result.failed) == {"bad-one", "user-0", "user-95"}
    assert report.applied == {"added": 1, "changed": 0, "removed": 9}
    assert set(fake.members(made.id)) == {f"user-{i}" for i in range(90)} | {"good-one", "user-95"}


async def test_a_dry_run_counts_the_difference_names_the_first_ids_and_sends_nothing(
    batch: BatchBackend, dexatel: DexatelBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    """On a journalled backend (Batch) and a listing one (Dexatel): the counts and the first
    ids of each kind, in id order; the provider receives no write and the store is unchanged."""
    await batch.create_audience("dry")
    await sync(batch, "dry", people(100), state=state)
    desired = people(100)
    desired[3] = Member("user-3", attributes={"plan": "silver", "rank": 3})
    del desired[50:70]
    desired += [Member(f"new-{i:02d}") for i in range(15)]
    before = dict(state.iter_entries(scope_of(batch), "dry"))
    emulators.batch.requests.clear()

    report = await sync(batch, "dry", desired, state=state, dry_run=True)
    assert report.dry_run
    assert (report.added, report.changed, report.removed, report.unchanged) == (15, 1, 20, 79)
    assert report.examples["added"] == tuple(f"new-{i:02d}" for i in range(10))
    assert report.examples["changed"] == ("user-3",)
    assert report.examples["removed"] == tuple(sorted(f"user-{i}" for i in range(50, 70))[:10])
    assert report.result.operations == 0
    assert report.result.applied == 0
    assert [r.path for r in emulators.batch.requests if r.method != "GET"] == []
    assert dict(state.iter_entries(scope_of(batch), "dry")) == before
    assert len(emulators.batch.members("dry")) == 100

    audience = await dexatel.create_audience("dry-listed", channel="SMS")
    numbers = [Member(f"+1555{i:07d}") for i in range(30)]
    await sync(dexatel, audience.id, numbers)
    emulators.dexatel.requests.clear()
    listed = await sync(dexatel, audience.id, numbers[5:], dry_run=True)
    assert (listed.added, listed.removed, listed.unchanged) == (0, 5, 25)
    assert listed.examples["removed"] == tuple(m.id for m in numbers[:5])
    assert [r for r in emulators.dexatel.requests if r.method != "GET"] == []


async def test_a_dry_run_of_a_missing_audience_with_create_creates_nothing(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    report = await sync(batch, "not-yet", people(12), state=state, create=True, dry_run=True)
    assert (report.added, report.removed) == (12, 0)
    assert [r for r in emulators.batch.requests if r.method != "GET"] == []
    with pytest.raises(NotFoundError):
        await batch.get_audience("not-yet")
