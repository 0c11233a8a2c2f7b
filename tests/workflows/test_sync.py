"""sync(): only the difference is sent, against the provider's listing or the state store."""

from __future__ import annotations

import pytest

from audiencekit import ConfigurationError, Member, ValidationError
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore, scope_of
from audiencekit.sync import sync
from audiencekit.testing import EmulatorServer

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
