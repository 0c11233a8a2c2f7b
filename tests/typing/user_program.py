"""A user's program: the README's Quickstart, campaigns through ``backend.client``, and the
workflows. ``tests/typing/test_typing.py`` checks that it passes ``mypy --strict``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import anyio

from audiencekit import (
    Add,
    AudienceWriter,
    BatchBackend,
    BulkResult,
    DexatelBackend,
    Member,
    Mirror,
    Remove,
    StateStore,
    open_backend,
)
from audiencekit.options import PollPolicy
from audiencekit.workflows import MigrationReport, SyncReport, migrate, sync


async def quickstart() -> int:
    async with open_backend("batch") as batch:
        await batch.create_audience("vip_users", exist_ok=True)
        result: BulkResult = await batch.add_members(
            "vip_users",
            (Member(f"user-{i}", attributes={"plan": "gold"}) for i in range(10)),
        )
        ids: list[Member | str] = ["user-1", Member("user-2", attributes={"plan": "gold"})]
        await batch.add_members("vip_users", ids)  # plain str ids: the fast path
        await batch.add_members("vip_users", (f"user-{i}" for i in range(10)))
        token_state = batch.poller  # the Batch backend's own attributes are known
        del token_state
    async with open_backend("dexatel", concurrency=4) as dexatel:
        audience = await dexatel.create_audience("vip", channel="SMS", exist_ok=True)
        await dexatel.apply(audience.id, [Add(Member("+37477000001")), Remove("+37477000002")])
        async for member in dexatel.iter_members(audience.id):
            print(member.id, member.attributes)
    return result.applied


async def campaign(dexatel: DexatelBackend, audience_id: str) -> str:
    client = dexatel.client  # campaigns and templates are on the provider's client
    template = await client.create_template(channel="SMS", name="sale", text="Hi {first_name}")
    when = datetime.now(timezone.utc) + timedelta(days=1)
    made = await client.create_campaign(
        sender="ShopCo", audience_id=audience_id, template_id=template.id, schedule=when
    )
    done = await client.wait_for_campaign(made.id, policy=PollPolicy(max_wait=60))
    return done.status.value


async def workflows(dexatel: DexatelBackend, batch: BatchBackend, state: StateStore) -> bool:
    synced: SyncReport = await sync(batch, "vip_users", [Member("u1")], state=state)
    moved: MigrationReport = await migrate(dexatel, "vip", batch, "vip_users", state=state)
    both = Mirror({"dexatel": dexatel, "batch": batch})
    await both.add_members("vip", [Member("+37477000003")])
    async with AudienceWriter(batch, "vip_users", state=state) as writer:
        await writer.add(Member("u2"))
        await writer.remove("u3")
    return synced.result.ok and bool(moved.verified)


if __name__ == "__main__":
    anyio.run(quickstart)
