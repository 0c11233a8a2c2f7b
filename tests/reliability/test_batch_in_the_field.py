"""Batch as the field has it: a 1 request/s project budget answered 429 without Retry-After,
answers lost after the write took effect, views that fail, members Batch refuses, cancels.

The tests that measure pacing run on the real clock against the loopback emulator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import anyio
import pytest

from audiencekit import (
    Member,
    NotFoundError,
    PartialFailureError,
    PollTimeoutError,
    ValidationError,
)
from audiencekit.errors import UnexpectedResponseError
from audiencekit.options import PollPolicy, RetryPolicy
from audiencekit.progress import ChunkAccepted, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing

from ..conftest import Connect
from ..test_pages import yielded_until_stopped

pytestmark = pytest.mark.anyio

REAL_TIME = {"sleep": None, "clock": None}


def members(n: int, prefix: str = "u") -> list[Member]:
    return [Member(f"{prefix}{i}", attributes={"n": i}) for i in range(n)]


def requests_since(emulators: EmulatorServer, seq: int) -> list[tuple[str, int]]:
    return [(r.path.rsplit("/", 1)[-1], r.status) for r in emulators.batch.requests if r.seq > seq]


def last_seq(emulators: EmulatorServer) -> int:
    return emulators.batch.requests[-1].seq if emulators.batch.requests else 0


@pytest.mark.slow
async def test_default_settings_under_a_1_per_second_bucket_apply_every_id(
    connect: Connect, emulators: EmulatorServer
) -> None:
    """The reported limit, as an independent fake enforces it: 1 request/s per project over
    every request, views included, 429 without Retry-After. Default settings apply every id,
    draw few 429s, and take little more than the time the limit imposes."""
    emulators.batch.config.rate_limit = 1.0
    backend = connect(BatchBackend, **REAL_TIME, poll=PollPolicy(max_wait=600))
    await backend.create_audience("field")
    start_seq = last_seq(emulators)
    start = anyio.current_time()

    result = await backend.add_members("field", members(50_000))

    wall = anyio.current_time() - start
    assert result.ok
    assert result.applied == 50_000
    assert emulators.batch.members("field") == {f"u{i}": {"n": i} for i in range(50_000)}
    sent = requests_since(emulators, start_seq)
    refused = sum(1 for _, status in sent if status == 429)
    updates = sum(1 for path, status in sent if path == "update" and status == 202)
    views = sum(1 for path, status in sent if path == "view" and status == 200)
    assert updates == 5
    assert views / updates <= 1.5
    assert refused <= 0.1 * (updates + views)
    assert wall <= 1.25 * (updates + views) / 1.0


async def test_a_ceiling_above_the_real_limit_adapts_and_loses_nothing(
    connect: Connect, emulators: EmulatorServer
) -> None:
    emulators.batch.config.rate_limit = 4.0
    backend = connect(BatchBackend, **REAL_TIME, rate_limit=20.0, chunk_size=2_000)
    await backend.create_audience("adapt")
    start_seq = last_seq(emulators)

    result = await backend.add_members("adapt", members(20_000))

    assert result.ok
    assert len(emulators.batch.members("adapt")) == 20_000
    refused = [s for _, s in requests_since(emulators, start_seq) if s == 429]
    assert refused  # the ceiling was too high: Batch said so...
    governor = backend.client.transport.governor
    assert governor is not None
    assert governor.rate is not None
    assert governor.rate < 20.0  # ...and the governor slowed down


async def test_retry_after_is_honoured_by_the_whole_budget(
    connect: Connect, emulators: EmulatorServer
) -> None:
    emulators.batch.config.rate_limit = 5.0
    emulators.batch.config.retry_after_header = True
    backend = connect(BatchBackend, **REAL_TIME, rate_limit=15.0, chunk_size=2_000)
    await backend.create_audience("retry_after")
    result = await backend.add_members("retry_after", members(16_000))
    assert result.ok
    assert len(emulators.batch.members("retry_after")) == 16_000


async def test_two_backends_of_one_project_share_one_budget(
    connect: Connect, emulators: EmulatorServer
) -> None:
    emulators.batch.config.rate_limit = 4.0
    one = connect(BatchBackend, **REAL_TIME, rate_limit=4.0, chunk_size=2_000)
    two = connect(BatchBackend, **REAL_TIME, rate_limit=4.0, chunk_size=2_000)
    assert one.client.transport.governor is two.client.transport.governor
    await one.create_audience("left")
    await two.create_audience("right")
    start_seq = last_seq(emulators)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one.add_members, "left", members(8_000, "l"))
        tg.start_soon(two.add_members, "right", members(8_000, "r"))

    assert len(emulators.batch.members("left")) == 8_000
    assert len(emulators.batch.members("right")) == 8_000
    sent = requests_since(emulators, start_seq)
    assert sum(1 for _, s in sent if s == 429) <= 2  # paced together, not twice the limit


# -- cancels ----------------------------------------------------------------------------------


async def test_a_cancel_takes_effect_within_a_second_while_retries_back_off(
    connect: Connect, emulators: EmulatorServer
) -> None:
    backend = connect(BatchBackend, **REAL_TIME)
    await backend.create_audience("cancel")
    emulators.batch.set_faults(
        FaultPlan([Fault.http_status(429, "POST */audiences/update", retry_after=30)])
    )
    start = anyio.current_time()
    with anyio.move_on_after(1.0) as scope:
        await backend.add_members("cancel", members(30_000))
    assert scope.cancelled_caught
    assert anyio.current_time() - start < 2.0


async def test_a_cancel_mid_exchange_still_reports_the_token_issued(
    connect: Connect, emulators: EmulatorServer
) -> None:
    """The exchange of a write is shielded: cancelled while Batch answers, the call still
    learns (and reports) the token of every update Batch accepted."""
    backend = connect(BatchBackend, **REAL_TIME, rate_limit=None, chunk_size=1_000)
    await backend.create_audience("shielded")
    emulators.batch.set_faults(FaultPlan([Fault.slow(0.4, "POST */audiences/update")]))
    accepted: list[ChunkAccepted] = []

    def hear(event: ProgressEvent) -> None:
        if isinstance(event, ChunkAccepted):
            accepted.append(event)

    start = anyio.current_time()
    with anyio.move_on_after(0.2):
        await backend.add_members("shielded", members(3_000), on_progress=hear)
    assert anyio.current_time() - start < 1.5
    project = emulators.endpoints.batch_project
    tokens = set(emulators.batch.snapshot()[project]["shielded"]["tokens"])
    answered = [r for r in emulators.batch.requests if r.path.endswith("/update")]
    assert len(answered) == 3  # the three updates were on their way when the cancel came
    assert all(r.status == 202 for r in answered)
    assert len(accepted) == 3  # and the token of each was reported
    assert {event.handle for event in accepted} <= tokens


# -- what Batch answered, and what it did -----------------------------------------------------


async def test_an_update_answered_without_a_token_is_unknown_not_failed(
    connect: Connect, emulators: EmulatorServer
) -> None:
    backend = connect(BatchBackend, chunk_size=100)
    await backend.create_audience("no_token")
    emulators.batch.set_faults(
        FaultPlan(
            [Fault.http_status(202, "POST */audiences/update", timing=Timing.AFTER, calls=[2])]
        )
    )
    result = await backend.add_members("no_token", members(300), raise_on_failure=False)

    assert result.failed == {}
    chunk = {int(i[1:]) // 100 for i in result.unknown}  # the ids of one chunk of 100
    assert len(chunk) == 1
    assert set(result.unknown) == {f"u{i}" for i in range(100 * min(chunk), 100 * min(chunk) + 100)}
    assert all(isinstance(e, UnexpectedResponseError) for e in result.unknown.values())
    emulators.batch.apply_pending()
    assert len(emulators.batch.members("no_token")) == 300  # Batch did apply it


async def test_views_that_keep_failing_leave_the_write_pending_and_resumable(
    connect: Connect, emulators: EmulatorServer
) -> None:
    backend = connect(BatchBackend, retry=RetryPolicy(max_retries=2), chunk_size=1_000)
    await backend.create_audience("views_fail")
    emulators.batch.set_faults(FaultPlan([Fault.http_status(503, "GET */audiences/view")]))

    with pytest.raises(PollTimeoutError) as caught:
        await backend.add_members("views_fail", members(2_500))

    result = caught.value.result
    assert result is not None
    assert result.failed == {}
    assert result.unknown == {}
    assert result.pending_count == 2_500
    assert len(caught.value.causes) == 3
    emulators.batch.set_faults(FaultPlan())
    resumed = await backend.wait(caught.value)
    assert resumed.ok
    assert resumed.applied == 2_500
    assert len(emulators.batch.members("views_fail")) == 2_500


async def test_a_create_that_timed_out_can_be_resumed(
    connect: Connect, emulators: EmulatorServer
) -> None:
    emulators.batch.config.index_polls = 1_000
    backend = connect(BatchBackend, poll=PollPolicy(max_wait=5, interval=1))
    with pytest.raises(PollTimeoutError) as caught:
        await backend.create_audience("slow_create")
    assert [chunk.audience_id for chunk in caught.value.pending] == ["slow_create"]
    emulators.batch.config.index_polls = 0
    resumed = await backend.wait(caught.value)
    assert resumed.ok
    assert (await backend.get_audience("slow_create")).id == "slow_create"


@pytest.mark.parametrize("indexed", [False, True])
async def test_delete_waits_until_the_audience_is_gone(
    connect: Connect, emulators: EmulatorServer, indexed: bool
) -> None:
    emulators.batch.config.index_removals = indexed
    backend = connect(BatchBackend)
    await backend.create_audience("doomed")
    await backend.delete_audience("doomed")
    with pytest.raises(NotFoundError):
        await backend.get_audience("doomed")


async def test_one_member_batch_refuses_fails_only_itself(
    connect: Connect, emulators: EmulatorServer
) -> None:
    """Batch refuses the whole update (400) for one member the client cannot know is bad
    (here a shorter id limit than the documented one): the chunk is split to isolate it."""
    emulators.batch.config.max_id_length = 20
    backend = connect(BatchBackend)
    await backend.create_audience("one_bad")
    start_seq = last_seq(emulators)
    batch = members(10_000)
    bad = "x" * 30
    batch[6_789] = Member(bad)

    result = await backend.add_members("one_bad", batch, raise_on_failure=False)

    assert set(result.failed) == {bad}
    assert "ids[0].id" in str(result.failed[bad])  # Batch's own message
    assert result.applied == 9_999
    assert len(emulators.batch.members("one_bad")) == 9_999
    updates = [s for path, s in requests_since(emulators, start_seq) if path == "update"]
    assert len(updates) <= 1 + 30


async def test_a_refused_replace_is_never_split(
    connect: Connect, emulators: EmulatorServer
) -> None:
    """Two replaces would keep only the second half: a refused replace fails whole."""
    emulators.batch.config.max_id_length = 20
    backend = connect(BatchBackend)
    await backend.create_audience("replaced")
    start_seq = last_seq(emulators)
    batch = [*members(100), Member("y" * 30)]

    with pytest.raises(PartialFailureError) as caught:
        await backend.replace_members("replaced", batch)

    assert len(caught.value.result.failed) == 101
    replaces = [s for path, s in requests_since(emulators, start_seq) if path == "replace"]
    assert replaces == [400]


async def test_datetimes_are_sent_with_four_digit_years_or_refused_before_sending(
    connect: Connect, emulators: EmulatorServer
) -> None:
    backend = connect(BatchBackend)
    await backend.create_audience("dates")
    early = datetime(999, 5, 1, tzinfo=timezone.utc)
    await backend.add_members("dates", [Member("early", attributes={"at": early})])
    assert emulators.batch.members("dates")["early"] == {"date(at)": "0999-05-01T00:00:00Z"}

    start_seq = last_seq(emulators)
    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))  # before year 1 in UTC
    with pytest.raises(ValidationError, match="out of range"):
        await backend.add_members("dates", [Member("edge", attributes={"at": edge})])
    assert requests_since(emulators, start_seq) == []


@pytest.mark.parametrize(
    "lost",
    [
        Fault.http_status(503, "POST */audiences/remove", timing=Timing.AFTER, limit=1),
        Fault.drop("POST */audiences/remove", timing=Timing.AFTER, limit=1),
    ],
    ids=["5xx", "dropped"],
)
@pytest.mark.parametrize("indexed", [False, True])
async def test_a_delete_whose_answer_was_lost_is_done_when_the_replay_finds_it_gone(
    connect: Connect, emulators: EmulatorServer, lost: Fault, indexed: bool
) -> None:
    """The first remove took effect and its answer was lost: the replay's 404 means done."""
    emulators.batch.config.index_removals = indexed
    backend = connect(BatchBackend)
    await backend.create_audience("lost_answer")
    emulators.batch.set_faults(FaultPlan([lost]))

    await backend.delete_audience("lost_answer")

    assert emulators.batch.faults.fired() == [1]
    project = emulators.endpoints.batch_project
    assert "lost_answer" not in emulators.batch.snapshot().get(project, {})
    removes = [r for r in emulators.batch.requests if r.path.endswith("/remove")]
    assert [r.fault for r in removes] == [f"{lost.kind.value}:after", None]
    assert removes[1].status == (202 if indexed else 404)  # still being removed, or gone


async def test_deleting_an_audience_that_never_existed_is_not_found(
    connect: Connect, emulators: EmulatorServer
) -> None:
    backend = connect(BatchBackend)
    with pytest.raises(NotFoundError):
        await backend.delete_audience("never_there")
    assert [s for path, s in requests_since(emulators, 0) if path == "remove"] == [404]


@pytest.mark.parametrize("value", [None, "QUEUED"], ids=["no_state", "unknown_state"])
async def test_views_without_a_known_state_keep_the_write_pending_until_it_arrives(
    connect: Connect, emulators: EmulatorServer, value: str | None
) -> None:
    emulators.batch.config.stateless_views = 3
    emulators.batch.config.stateless_value = value
    backend = connect(BatchBackend, chunk_size=1_000)
    await backend.create_audience("stateless")

    result = await backend.add_members("stateless", members(2_500))

    assert result.ok
    assert result.applied == 2_500
    assert len(emulators.batch.members("stateless")) == 2_500
    views = [r for r in emulators.batch.requests if r.path.endswith("/view")]
    assert len(views) >= 3 * 3  # each of the three tokens was viewed past its stateless views


@pytest.mark.parametrize("value", [None, "QUEUED"], ids=["no_state", "unknown_state"])
async def test_views_that_never_give_a_known_state_end_pending_never_failed(
    connect: Connect, emulators: EmulatorServer, value: str | None
) -> None:
    backend = connect(BatchBackend, chunk_size=1_000)
    await backend.create_audience("never_known")
    emulators.batch.config.stateless_views = 1_000_000
    emulators.batch.config.stateless_value = value

    with pytest.raises(PollTimeoutError) as caught:
        await backend.add_members("never_known", members(2_500))

    result = caught.value.result
    assert result is not None
    assert result.failed == {}
    assert result.unknown == {}
    assert result.pending_count == 2_500
    assert len(emulators.batch.members("never_known")) == 2_500  # Batch applied every one


async def test_audiences_on_endless_pages_are_yielded_once_then_the_listing_stops(
    connect: Connect, emulators: EmulatorServer
) -> None:
    """Fresh ``next_from`` cursors with the same audiences forever: each audience once, then
    PaginationError naming the last cursor."""
    backend = connect(BatchBackend)
    for i in range(3):
        await backend.create_audience(f"loop{i}")
    emulators.batch.config.endless_pages = True

    seen, error = await yielded_until_stopped(backend.list_audiences())

    assert sorted(a.id for a in seen) == ["loop0", "loop1", "loop2"]
    pages = [r.query for r in emulators.batch.requests if r.path.endswith("/list")]
    assert len(pages) <= 102
    assert error.cursor is not None
    assert all(f"from={error.cursor}" not in query for query in pages)  # a fresh one
