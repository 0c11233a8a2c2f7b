"""Reliability: heavy fault injection and cancellation end in exactly the expected state."""

from __future__ import annotations

import random
from typing import Any

import anyio
import pytest

from audiencekit import Add, Member, Operation, Remove
from audiencekit.options import PollPolicy, RetryPolicy
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing

from ..conftest import Connect

pytestmark = pytest.mark.anyio

RETRY = RetryPolicy(max_retries=6)


@pytest.fixture
def batch(connect: Connect) -> BatchBackend:
    return connect(BatchBackend, retry=RETRY, poll=PollPolicy(max_wait=600, interval=0.5),
                   concurrency=6)  # fmt: skip


@pytest.fixture
def dexatel(connect: Connect) -> DexatelBackend:
    return connect(DexatelBackend, retry=RETRY, concurrency=12)


def random_ops(n: int, pool: int, seed: int) -> tuple[list[Operation], dict[str, Any]]:
    """n operations over a pool of ids (so ids recur across chunks), and the state they leave."""
    rng = random.Random(seed)
    ops: list[Operation] = []
    expected: dict[str, Any] = {}
    for i in range(n):
        member_id = f"u{rng.randrange(pool)}"
        if rng.random() < 0.25:
            ops.append(Remove(member_id))
            expected.pop(member_id, None)
        else:
            ops.append(Add(Member(member_id, attributes={"v": i})))
            expected[member_id] = {"v": i}
    return ops, expected


FAULTS = [
    Fault.http_status(429, "POST */audiences/update", rate=0.05),
    Fault.http_status(503, "POST */audiences/update", rate=0.03),
    Fault.http_status(503, "POST */audiences/update", rate=0.02, timing=Timing.AFTER),
    Fault.drop("POST */audiences/update", rate=0.005),
    Fault.drop("POST */audiences/update", rate=0.005, timing=Timing.AFTER),
    Fault.http_status(503, "GET */audiences/view", rate=0.1),
    Fault.drop("GET */audiences/view", rate=0.01),
    Fault.reorder(),
]


@pytest.mark.slow
async def test_200000_batch_operations_through_faults_and_reordering(
    batch: BatchBackend, audiencekit_emulators: EmulatorServer
) -> None:
    emulator = audiencekit_emulators.batch
    emulator.log_bodies = False
    batch.chunk_size = 1_000  # more calls, so more faults: about 400 requests
    await batch.create_audience("reliable")
    emulator.set_faults(FaultPlan(FAULTS, seed=200_000))
    ops, expected = random_ops(200_000, pool=120_000, seed=7)

    result = await batch.apply("reliable", ops)

    assert result.ok
    assert result.chunks > 150
    assert sum(emulator.faults.fired()) > 25  # the faults really happened
    assert result.retries > 0
    assert emulator.members("reliable") == expected


async def test_3000_dexatel_contacts_through_faults(
    dexatel: DexatelBackend, audiencekit_emulators: EmulatorServer
) -> None:
    emulator = audiencekit_emulators.dexatel
    audience = await dexatel.create_audience("reliable", channel="SMS")
    emulator.set_faults(
        FaultPlan(
            [
                Fault.http_status(429, "POST */contacts", rate=0.05),
                Fault.http_status(503, "POST */contacts", rate=0.02),
                Fault.http_status(500, "POST */contacts", rate=0.02, timing=Timing.AFTER),
                Fault.drop("POST */contacts", rate=0.005),
                Fault.drop("POST */contacts", rate=0.005, timing=Timing.AFTER),
                Fault.http_status(503, "* */contacts*", rate=0.03),
                Fault.http_status(503, "DELETE *", rate=0.05, timing=Timing.AFTER),
            ],
            seed=3_000,
        )
    )
    numbers = [f"+1555{i:07d}" for i in range(3_000)]
    await dexatel.add_members(
        audience.id, (Member(n, attributes={"first_name": "a"}) for n in numbers)
    )
    removed = set(numbers[::7])
    await dexatel.apply(
        audience.id,
        [Remove(n) for n in sorted(removed)]
        + [Add(Member(numbers[0], attributes={"last_name": "z"}))],
    )
    snapshot = emulator.snapshot()["account"]["audiences"][0]["contacts"]
    held = [c["number"] for c in snapshot]
    assert len(held) == len(set(held))  # no duplicates
    assert set(held) == (set(numbers) - removed) | {numbers[0]}  # nothing missing
    first = next(c for c in snapshot if c["number"] == numbers[0])
    assert (first["first_name"], first["last_name"]) == (None, "z")  # removed, then added anew
    assert sum(emulator.faults.fired()) > 100


@pytest.mark.parametrize("seed", range(4))
async def test_cancelled_at_a_random_point_then_run_again(
    batch: BatchBackend, audiencekit_emulators: EmulatorServer, seed: int
) -> None:
    emulator = audiencekit_emulators.batch
    emulator.set_faults(FaultPlan([Fault.reorder()], seed=seed))
    name = f"cancel{seed}"
    batch.chunk_size = 300
    await batch.create_audience(name)
    ops, expected = random_ops(6_000, pool=3_000, seed=seed)  # about 8 chunks
    rng = random.Random(seed)
    stop_after = rng.randrange(1, 7)
    finished = 0

    with anyio.CancelScope() as scope:

        def cancel_at_random(event: ProgressEvent) -> None:
            nonlocal finished
            if isinstance(event, ChunkDone):
                finished += 1
                if finished >= stop_after:
                    scope.cancel()

        await batch.apply(name, ops, on_progress=cancel_at_random)
    assert scope.cancel_called

    await batch.apply(name, ops)  # the caller's "resume": apply the same stream again
    assert emulator.members(name) == expected


@pytest.mark.parametrize("seed", range(3))
async def test_dexatel_cancelled_then_run_again_has_no_duplicates(
    dexatel: DexatelBackend, audiencekit_emulators: EmulatorServer, seed: int
) -> None:
    audience = await dexatel.create_audience(f"cancel{seed}", channel="SMS")
    members = [Member(f"+1555{i:07d}", attributes={"first_name": f"n{i}"}) for i in range(400)]
    with anyio.move_on_after(0.05 + 0.1 * seed):
        await dexatel.add_members(audience.id, members)
    await dexatel.add_members(audience.id, members)
    held = [
        c["number"]
        for c in audiencekit_emulators.dexatel.snapshot()["account"]["audiences"][0]["contacts"]
    ]
    assert sorted(held) == sorted(m.id for m in members)
