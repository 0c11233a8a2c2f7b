"""The bulk engine, driven through a provider over respx-mocked HTTP."""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
import respx

from audiencekit import Add, Member, PartialFailureError, PollTimeoutError, Remove, ValidationError
from audiencekit.errors import UnsupportedFeatureError
from audiencekit.progress import ChunkDone, ChunkSent, ProgressEvent

from .support import BASE, FakeClock, TokenBackend, TokenServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[TokenServer]:
    server = TokenServer()
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        yield server


@pytest.fixture
async def backend() -> AsyncIterator[TokenBackend]:
    async with TokenBackend(clock=FakeClock()) as backend:
        yield backend


def adds(n: int, start: int = 0) -> Iterator[Add]:
    return (Add(Member(f"u{i}")) for i in range(start, start + n))


@pytest.mark.parametrize(
    ("n", "sizes"),
    [
        (9_999, [9_999]),
        (10_000, [10_000]),
        (10_001, [10_000, 1]),
        (20_001, [10_000, 10_000, 1]),
    ],
)
async def test_chunk_boundaries(
    server: TokenServer, backend: TokenBackend, n: int, sizes: list[int]
) -> None:
    result = await backend.apply("aud", adds(n))

    assert sorted(len(update) for update in server.updates) == sorted(sizes)
    assert set(server.members) == {f"u{i}" for i in range(n)}
    assert result.applied == n
    assert result.chunks == len(sizes)
    assert len(result.handles) == len(sizes)
    assert result.ok


async def test_last_operation_wins_within_a_chunk(
    server: TokenServer, backend: TokenBackend
) -> None:
    ops = [
        Add(Member("a", attributes={"v": 1})),
        Remove("b"),
        Add(Member("a", attributes={"v": 2})),
        Add(Member("b")),
        Remove("a"),
        Add(Member("a", attributes={"v": 3})),
    ]
    result = await backend.apply("aud", ops)

    assert len(server.updates) == 1
    sent = server.updates[0]
    assert sent == [
        {"action": "add", "id": "a", "attributes": {"v": 3}},
        {"action": "add", "id": "b"},
    ]
    assert server.members == {"a": {"v": 3}, "b": {}}
    assert result.applied == 2


async def test_last_operation_wins_across_chunks_applied_out_of_order() -> None:
    # Chunk 0 adds x, chunk 2 removes it. The server applies writes only after polls and in a
    # shuffled order, so without holding chunk 2 back, x could come back to life.
    server = TokenServer(polls_to_apply=3, reorder=True, seed=7)
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=3, concurrency=8) as backend:
            ops = [
                Add(Member("x", attributes={"v": 1})), Add(Member("p")), Add(Member("q")),
                Add(Member("r")), Add(Member("s")), Add(Member("t")),
                Remove("x"), Add(Member("y")), Add(Member("z")),
            ]  # fmt: skip
            result = await backend.apply("aud", ops)

    assert "x" not in server.members
    assert set(server.members) == {"p", "q", "r", "s", "t", "y", "z"}
    assert [op["id"] for op in server.updates[-1]] == ["x", "y", "z"]
    assert result.applied == 9
    assert result.ok


async def test_a_chunk_waits_only_for_the_chunk_it_overlaps() -> None:
    server = TokenServer(polls_to_apply=2)
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=2, concurrency=8) as backend:
            events: list[ProgressEvent] = []
            ops = [Add(Member("a")), Add(Member("b")), Add(Member("c")), Add(Member("d")),
                   Remove("a"), Add(Member("e"))]  # fmt: skip
            await backend.apply("aud", ops, on_progress=events.append)

    order = [(type(e).__name__, e.chunk) for e in events]
    # chunk 2 touches "a" of chunk 0: it is sent only after chunk 0 is done; chunk 1 is not awaited
    assert order.index(("ChunkDone", 0)) < order.index(("ChunkSent", 2))
    assert order.index(("ChunkSent", 1)) < order.index(("ChunkDone", 0))
    assert set(server.members) == {"b", "c", "d", "e"}


async def test_a_sized_input_is_validated_whole_before_any_request(
    server: TokenServer, backend: TokenBackend
) -> None:
    ops: list[object] = [Add(Member(f"u{i}")) for i in range(25_000)]
    ops[3] = Add(Member("bad", attributes={"a": 1, "b": 2, "c": 3, "d": 4}))
    ops[20_000] = Remove("")
    ops[24_999] = "not an operation"

    with pytest.raises(ValidationError) as caught:
        await backend.apply("aud", ops)  # type: ignore[arg-type]

    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].id == "bad"
    assert "blank" in problems[1].message
    assert "str" in problems[2].message
    assert server.updates == []
    assert server.views == 0


async def test_a_stream_is_validated_chunk_by_chunk(
    server: TokenServer, backend: TokenBackend
) -> None:
    def ops() -> Iterator[Add]:
        yield from adds(10_000)
        yield Add(Member("ok"))
        yield Add(Member("bad", attributes={"a": 1, "b": 2, "c": 3, "d": 4}))
        yield from adds(5, start=20_000)

    with pytest.raises(ValidationError) as caught:
        await backend.apply("aud", ops())

    assert caught.value.ids == ("bad",)
    assert len(server.updates) == 1  # the first, valid chunk; nothing of the bad one
    assert caught.value.result is not None
    assert caught.value.result.applied == 10_000


async def test_async_iterables_stream(server: TokenServer, backend: TokenBackend) -> None:
    async def members() -> AsyncIterator[Member]:
        for i in range(12_345):
            if i % 1000 == 0:
                await anyio.lowlevel.checkpoint()
            yield Member(f"m{i}", attributes={"n": i})

    result = await backend.add_members("aud", members())

    assert result.applied == 12_345
    assert len(server.members) == 12_345
    assert server.members["m77"] == {"n": 77}


async def test_remove_members_takes_ids(server: TokenServer, backend: TokenBackend) -> None:
    await backend.add_members("aud", [Member("a"), Member("b")])
    await backend.remove_members("aud", ["a"])
    assert set(server.members) == {"b"}
    with pytest.raises(ValidationError, match="got str"):
        await backend.remove_members("aud", "b")
    assert set(server.members) == {"b"}


async def test_one_refused_id_fails_only_itself(server: TokenServer, backend: TokenBackend) -> None:
    """A 400 refuses the whole chunk before anything is applied: the chunk is split until the
    id the provider refuses is isolated, at two requests a halving."""
    refused: list[int] = []

    def refuse(ops: list[dict[str, object]]) -> httpx.Response | None:
        if any(op["id"] == "u10000" for op in ops):
            refused.append(len(ops))
            return httpx.Response(400, json={"error_code": "BAD", "error_message": "bad u10000"})
        return None

    server.fail = refuse
    with pytest.raises(PartialFailureError) as caught:
        await backend.apply("aud", adds(25_000))

    result = caught.value.result
    assert set(result.failed) == {"u10000"}
    assert "bad u10000" in str(result.failed["u10000"])
    assert result.unknown == {}
    assert result.applied == 24_999
    assert set(server.members) == {f"u{i}" for i in range(25_000)} - {"u10000"}
    assert refused[-1] == 1  # isolated down to the one id
    accepted_calls = len(server.updates)
    assert accepted_calls + len(refused) <= 3 + 30  # three chunks, and the split's cost
    message = str(caught.value)
    assert message.startswith("bulk call did not apply every id: 24,999 applied, 1 failed")
    # the cause is in the text, with the id it struck
    assert "\n  1 failed: " in message
    assert "answered 400 [BAD]: bad u10000 (e.g. 'u10000')" in message


async def test_a_chunk_refused_for_one_reason_in_both_halves_fails_whole(
    server: TokenServer, backend: TokenBackend
) -> None:
    calls: list[int] = []

    def refuse(ops: list[dict[str, object]]) -> httpx.Response | None:
        calls.append(len(ops))
        return httpx.Response(400, json={"error_code": "BAD", "error_message": "audience bad"})

    server.fail = refuse
    result = await backend.apply("aud", adds(10), raise_on_failure=False)

    assert set(result.failed) == {f"u{i}" for i in range(10)}
    assert calls == [10, 5, 5]  # one split shows it is not about particular ids
    assert server.members == {}


async def test_several_refused_ids_are_each_isolated(
    server: TokenServer, backend: TokenBackend
) -> None:
    bad = {"u3", "u700", "u701", "u999"}

    def refuse(ops: list[dict[str, object]]) -> httpx.Response | None:
        found = sorted(str(op["id"]) for op in ops if op["id"] in bad)
        if found:
            return httpx.Response(400, json={"error_code": "BAD", "error_message": ",".join(found)})
        return None

    server.fail = refuse
    result = await backend.apply("aud", adds(1_000), raise_on_failure=False)

    assert set(result.failed) == bad
    assert result.applied == 996
    assert set(server.members) == {f"u{i}" for i in range(1_000)} - bad


async def test_ambiguous_failures_land_in_unknown(
    server: TokenServer, backend: TokenBackend
) -> None:
    server.fail = lambda ops: httpx.Response(500, json={"error_code": "X", "error_message": "boom"})
    result = await backend.apply("aud", adds(3), raise_on_failure=False)

    assert set(result.unknown) == {"u0", "u1", "u2"}
    assert result.failed == {}
    assert result.applied == 0
    assert result.retries == 3  # the policy's max_retries, then given up


async def test_a_later_success_clears_an_earlier_failure() -> None:
    server = TokenServer()
    calls = 0

    def fail_first(ops: list[dict[str, object]]) -> httpx.Response | None:
        nonlocal calls
        calls += 1
        return (  # the first chunk and both its halves: refused for one reason, failed whole
            httpx.Response(400, json={"error_code": "B", "error_message": "x"})
            if calls <= 3
            else None
        )

    server.fail = fail_first
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=2, concurrency=1) as backend:
            ops = [Add(Member("a")), Add(Member("b")), Add(Member("c")), Add(Member("a"))]
            result = await backend.apply("aud", ops, raise_on_failure=False)

    assert set(result.failed) == {"b"}
    assert set(server.members) == {"a", "c"}


async def test_members_are_freed_while_their_chunk_is_indexed() -> None:
    # Only the ids of a sent chunk stay in memory while it is polled: the operations, members
    # and attributes of a million queued members would otherwise wait for the indexing too.
    server = TokenServer(polls_to_apply=2)
    alive: dict[str, weakref.ref[Member]] = {}
    checked: list[str] = []
    inner = server.view

    def view(request: httpx.Request) -> httpx.Response:
        ids = [op["id"] for op in server._writes[request.url.params["indexing_token"]].ops]
        assert [i for i in ids if alive[i]() is not None] == []
        checked.extend(ids)
        return inner(request)

    def members() -> Iterator[Add]:
        for i in range(12):
            member = Member(f"u{i}", attributes={"plan": "gold"})
            alive[member.id] = weakref.ref(member)
            yield Add(member)
            del member

    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        router.get(f"{BASE}/view").mock(side_effect=view)
        async with TokenBackend(clock=FakeClock(), chunk_size=5, concurrency=2) as backend:
            result = await backend.apply("aud", members())

    assert result.applied == 12
    assert sorted(set(checked)) == sorted(alive)
    assert len(server.members) == 12


async def test_wait_false_returns_handles_and_wait_resumes() -> None:
    server = TokenServer(polls_to_apply=2)
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=4) as backend:
            sent = await backend.apply("aud", adds(10), wait=False)
            assert sent.applied == 0
            assert [len(p.ids) for p in sent.pending] == [4, 4, 2]
            assert server.views == 0
            assert server.members == {}

            done = await backend.wait(sent)

    assert done.applied == 10
    assert done.ok
    assert len(server.members) == 10
    assert done.polls == server.views == 6


@pytest.mark.parametrize("resume_with", ["error", "result", "pending", "result.pending"])
async def test_a_poll_timeout_raises_with_what_wait_resumes(resume_with: str) -> None:
    server = TokenServer(polls_to_apply=1_000)
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=5, max_wait=10.0) as backend:
            with pytest.raises(PollTimeoutError) as caught:
                await backend.apply("aud", adds(12))
            error = caught.value
            assert error.result is not None
            assert error.pending == error.result.pending
            assert error.handles == tuple(p.handle for p in error.pending)
            assert error.result.pending_count == 12
            assert error.result.failed == {}
            assert error.result.unknown == {}
            assert "Nothing is lost" in str(error)
            for write in server._writes.values():
                write.polls_left = 0
            resumed = await backend.wait(
                {
                    "error": error,
                    "result": error.result,
                    "pending": error.pending,
                    "result.pending": error.result.pending,
                }[resume_with]
            )

    assert resumed.applied == 12
    assert resumed.ok
    assert len(server.members) == 12


async def test_a_status_check_that_keeps_failing_leaves_the_chunk_pending() -> None:
    """An accepted write is never failed for want of a confirmation: the view erroring (here
    401 on every view) leaves the chunk pending with its handle, and the error says why."""
    server = TokenServer(polls_to_apply=1)
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        router.get(f"{BASE}/view").mock(
            return_value=httpx.Response(401, json={"error_code": "A", "error_message": "nope"})
        )
        async with TokenBackend(clock=FakeClock(), chunk_size=5) as backend:
            with pytest.raises(PollTimeoutError) as caught:
                await backend.apply("aud", adds(12))
            result = caught.value.result
            assert result is not None
            assert result.failed == {}
            assert result.unknown == {}
            assert result.pending_count == 12
            assert len(caught.value.causes) == 3
            assert "nope" in str(caught.value)
            server.mount(router)  # the view works again
            resumed = await backend.wait(caught.value)

    assert resumed.applied == 12
    assert len(server.members) == 12


async def test_progress_events_account_for_every_chunk(
    server: TokenServer, backend: TokenBackend
) -> None:
    events: list[ProgressEvent] = []
    await backend.apply("aud", adds(25_001), on_progress=events.append)

    sent = [e for e in events if isinstance(e, ChunkSent)]
    done = [e for e in events if isinstance(e, ChunkDone)]
    assert sorted(e.size for e in sent) == [5_001, 10_000, 10_000]
    assert [len(e.ids) for e in sent] == [e.size for e in sent]
    assert sorted(i for e in sent for i in e.ids) == sorted(f"u{i}" for i in range(25_001))
    assert [e.ids for e in sent] == [next(d.ids for d in done if d.chunk == e.chunk) for e in sent]
    assert len(done) == 3
    assert done[-1].applied_total == 25_001
    assert done[-1].operations_read == 25_001


async def test_concurrency_is_bounded(server: TokenServer) -> None:
    in_flight = 0
    peak = 0
    inner = server.update

    async def slow_update(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return inner(request)

    server.router.post(f"{BASE}/update").mock(side_effect=slow_update)
    async with TokenBackend(clock=FakeClock(), chunk_size=10, concurrency=3) as backend:
        await backend.apply("aud", adds(200))
    assert peak == 3
    assert len(server.members) == 200


async def test_wait_false_is_refused_where_writes_are_immediate(
    server: TokenServer, backend: TokenBackend
) -> None:
    type(backend).capabilities, saved = (
        type(backend).capabilities.__class__(
            list_members=False, rename=False, replace=False, campaigns=False,
            deferred_writes=False, max_batch=1,
        ),
        type(backend).capabilities,
    )  # fmt: skip
    try:
        with pytest.raises(UnsupportedFeatureError, match="wait=False"):
            await backend.apply("aud", adds(1), wait=False)
    finally:
        type(backend).capabilities = saved
    assert server.updates == []


async def test_the_provider_receives_json_with_auth() -> None:
    server = TokenServer()
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock()) as backend:
            await backend.apply("aud", [Add(Member("a", attributes={"k": "v"}))])
        update = router.routes[0].calls.last.request

    assert update.method == "POST"
    assert update.headers["authorization"].startswith("Bearer sk_test_")
    assert json.loads(update.content) == {
        "name": "aud",
        "ids": [{"action": "add", "id": "a", "attributes": {"k": "v"}}],
    }


# -- plain str ids in add_members: adds of members without attributes ------------------------------


async def test_str_ids_mix_with_members_and_the_last_per_id_wins(
    server: TokenServer, backend: TokenBackend
) -> None:
    items = [Member("a", attributes={"v": 1}), "b", "a", Member("b", attributes={"v": 2})]
    result = await backend.add_members("aud", items)

    assert server.updates == [[
        {"action": "add", "id": "a"},
        {"action": "add", "id": "b", "attributes": {"v": 2}},
    ]]  # fmt: skip
    assert result.applied == 2
    assert result.operations == 4


async def test_str_ids_stream_in_chunks(server: TokenServer) -> None:
    async with TokenBackend(clock=FakeClock(), chunk_size=3) as backend:
        result = await backend.add_members("aud", (f"u{i}" for i in range(7)))

    assert sorted(len(update) for update in server.updates) == [1, 3, 3]
    assert set(server.members) == {f"u{i}" for i in range(7)}
    assert result.applied == 7


async def test_str_ids_from_an_async_iterable(server: TokenServer, backend: TokenBackend) -> None:
    async def ids() -> AsyncIterator[str]:
        for i in range(5):
            yield f"u{i}"

    result = await backend.add_members("aud", ids())
    assert result.applied == 5
    assert set(server.members) == {f"u{i}" for i in range(5)}


async def test_a_list_with_one_bad_str_id_is_refused_whole(
    server: TokenServer, backend: TokenBackend
) -> None:
    with pytest.raises(ValidationError) as caught:
        await backend.add_members("aud", ["u1", "", "u2", "\ud800"])

    assert [p.message for p in caught.value.problems] == [
        "an id must not be empty or blank",
        "an id must be valid text",
    ]
    assert server.updates == []


async def test_a_bad_str_id_in_a_stream_stops_its_chunk(server: TokenServer) -> None:
    async with TokenBackend(clock=FakeClock(), chunk_size=2) as backend:
        with pytest.raises(ValidationError) as caught:
            await backend.add_members("aud", (i for i in ["u1", "u2", "u3", " "]))

    assert [p.message for p in caught.value.problems] == ["an id must not be empty or blank"]
    assert server.updates == [[{"action": "add", "id": "u1"}, {"action": "add", "id": "u2"}]]


async def test_apply_still_refuses_a_str(server: TokenServer, backend: TokenBackend) -> None:
    with pytest.raises(ValidationError, match="expected Add or Remove"):
        await backend.apply("aud", ["u1"])  # type: ignore[list-item]
    assert server.updates == []
