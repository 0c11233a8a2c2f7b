"""migrate(): Dexatel to Batch, dry runs, mappings, and an interrupted run resumed exactly."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from audiencekit import ConfigurationError, Member
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore, scope_of
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import migrate, sync

pytestmark = pytest.mark.anyio


async def seeded(dexatel: DexatelBackend, emulators: EmulatorServer, n: int) -> str:
    audience = await dexatel.create_audience("source", channel="SMS")
    emulators.dexatel.seed_contacts(
        audience.id,
        ({"number": f"+1555{i:07d}", "first_name": f"n{i}", "custom1": "vip"} for i in range(n)),
    )
    return audience.id


def sent_ids(emulators: EmulatorServer) -> Counter[str]:
    return Counter(
        op["id"]
        for r in emulators.batch.requests
        if r.path.endswith("/update") and r.status == 202
        for op in r.body["ids"]
    )


async def test_dexatel_to_batch_with_the_default_mapping(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    source = await seeded(dexatel, emulators, 2_500)
    report = await migrate(dexatel, source, batch, "migrated", create=True, state=state)
    assert report.ok
    assert report.verified is True
    assert (report.read, report.sent, report.applied) == (2_500, 2_500, 2_500)
    assert report.target_size == report.expected_size == 2_500
    held = emulators.batch.members("migrated")
    assert held["+15550000042"] == {"first_name": "n42", "custom1": "vip"}
    assert (
        state.checkpoint(f"migrate:{scope_of(dexatel)}:{source}->{scope_of(batch)}:migrated")
        is None
    )

    # what was pushed is in the state store: syncing the same members to Batch sends nothing
    emulators.batch.requests.clear()
    again = await sync(batch, "migrated", [m async for m in dexatel.iter_members(source)],
                       state=state)  # fmt: skip
    assert again.sent == 0
    assert sent_ids(emulators) == Counter()


async def test_a_mapping_and_a_dry_run(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    source = await seeded(dexatel, emulators, 300)
    await batch.create_audience("mapped")

    def mapping(member: Member) -> Member:
        return Member(
            member.id.lstrip("+"),
            attributes={"name": member.attributes["first_name"], "tier": 1},
        )

    emulators.batch.requests.clear()
    dry = await migrate(dexatel, source, batch, "mapped", mapping=mapping, dry_run=True)
    assert dry.dry_run
    assert (dry.read, dry.sent, dry.unchanged) == (300, 300, 0)
    assert (dry.added, dry.changed, dry.removed) == (300, 0, 0)
    assert dry.examples["added"] == tuple(f"1555{i:07d}" for i in range(10))
    assert sent_ids(emulators) == Counter()

    report = await migrate(dexatel, source, batch, "mapped", mapping=mapping, state=state)
    assert report.applied == 300
    assert report.verified is True  # the ids the store knows the target holds: the source's
    assert emulators.batch.members("mapped")["15550000007"] == {"name": "n7", "tier": 1}

    dry_again = await migrate(dexatel, source, batch, "mapped", mapping=mapping, dry_run=True,
                              state=state)  # fmt: skip
    assert (dry_again.sent, dry_again.unchanged) == (0, 300)
    assert dry_again.examples == {"added": (), "changed": (), "removed": ()}
    assert (report.added, report.changed) == (300, 0)


async def test_a_dry_run_names_what_the_target_would_refuse(
    dexatel: DexatelBackend, batch: BatchBackend, emulators: EmulatorServer
) -> None:
    source = await seeded(dexatel, emulators, 5)
    report = await migrate(
        dexatel,
        source,
        batch,
        "refusing",
        mapping=lambda m: Member(m.id, attributes={"bad key!": 1}),
        dry_run=True,
    )
    assert len(report.invalid) == 5
    assert not report.ok


async def test_an_interrupted_run_needs_resume(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    source = await seeded(dexatel, emulators, 10)
    with pytest.raises(ConfigurationError, match="nothing to resume"):
        await migrate(dexatel, source, batch, "t", create=True, state=state, resume=True)
    # A checkpoint saved by audiencekit 0.1 (its run id names no accounts) is honoured too.
    state.save_checkpoint(f"migrate:dexatel:{source}->batch:t", {"cursor": 3})
    with pytest.raises(ConfigurationError, match="resume=True"):
        await migrate(dexatel, source, batch, "t", create=True, state=state)


@pytest.mark.slow
async def test_killing_a_60000_member_migration_halfway_and_resuming(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    emulators.dexatel.log_bodies = False
    source = await seeded(dexatel, emulators, 60_000)
    done = 0

    with anyio.CancelScope() as scope:

        def kill_halfway(event: ProgressEvent) -> None:
            nonlocal done
            if isinstance(event, ChunkDone) and not event.pending:
                done += event.size
                if done >= 30_000:
                    scope.cancel()  # as if the process died: nothing after this point runs

        await migrate(dexatel, source, batch, "big", create=True, state=state,
                      on_progress=kill_halfway)  # fmt: skip
    assert scope.cancel_called
    checkpoint = state.checkpoint(f"migrate:{scope_of(dexatel)}:{source}->{scope_of(batch)}:big")
    assert checkpoint is not None
    confirmed = state.count(scope_of(batch), "big")
    assert 0 < confirmed < 60_000
    before = sum(sent_ids(emulators).values())

    report = await migrate(dexatel, source, batch, "big", create=True, state=state, resume=True)
    assert report.resumed_from >= confirmed  # what was confirmed, and what was then waited for
    assert report.verified is True
    assert report.target_size == 60_000
    held = emulators.batch.members("big")
    assert len(held) == 60_000
    assert held["+15550059999"] == {"first_name": "n59999", "custom1": "vip"}
    counts = sent_ids(emulators)
    assert len(counts) == 60_000
    assert max(counts.values()) == 1  # no id, so no chunk, was sent twice
    assert before < 60_000
