"""Mirror (dual writes) and AudienceWriter (coalesced writes for services)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from audiencekit import (
    Add,
    AudienceBackend,
    AudienceBusyError,
    AudienceWriter,
    AuthenticationError,
    Member,
    Mirror,
    PartialFailureError,
    PollTimeoutError,
    Remove,
    ValidationError,
)
from audiencekit.errors import BadRequestError, WriterStoppedError
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import StateStore, fingerprint, scope_of
from audiencekit.testing import EmulatorServer, FakeBackend
from audiencekit.workflows import MirrorError, sync

pytestmark = pytest.mark.anyio


async def test_a_mirror_writes_to_every_backend(
    batch: BatchBackend, emulators: EmulatorServer
) -> None:
    fake = FakeBackend(chunk_size=100)
    mirror = Mirror({"fake": fake, "batch": batch}, buffer=50)
    assert isinstance(mirror, AudienceBackend)
    created = await mirror.create_audience("dual")
    assert created.id == "dual"
    assert set(created.extra["ids"]) == {"fake", "batch"}

    def ops():  # type: ignore[no-untyped-def]
        for i in range(1_000):
            yield Add(Member(f"u{i}", attributes={"i": i}))
        yield Remove("u7")

    result = await mirror.apply("dual", ops())
    assert result.ok
    assert set(result.parts) == {"fake", "batch"}
    assert result.parts["batch"].applied == 1_000
    fake_id = created.extra["ids"]["fake"]
    assert len(fake.members(fake_id)) == 999
    assert len(emulators.batch.members("dual")) == 999
    assert {m.id async for m in mirror.iter_members("dual")} == set(fake.members(fake_id))


async def test_one_backend_failing_loses_nothing_on_the_other(
    batch: BatchBackend, emulators: EmulatorServer
) -> None:
    fake = FakeBackend(chunk_size=10)
    mirror = Mirror({"fake": fake, "batch": batch}, buffer=5)
    await mirror.create_audience("dual")
    fake.fail_next("write", AuthenticationError("revoked", provider="fake", status=401), times=99)
    fake.fail_next("get_audience", AuthenticationError("revoked", provider="fake", status=401))

    with pytest.raises(PartialFailureError) as caught:
        await mirror.add_members("dual", (Member(f"u{i}") for i in range(200)))
    parts = caught.value.result.parts
    assert len(parts["fake"].failed) == 200
    assert parts["batch"].applied == 200
    assert len(emulators.batch.members("dual")) == 200


async def test_a_backend_that_raises_is_reported_after_the_others_finish(
    batch: BatchBackend, emulators: EmulatorServer
) -> None:
    fake = FakeBackend()
    mirror = Mirror({"batch": batch, "fake": fake})
    await mirror.create_audience("dual")
    await fake.aclose()  # a closed backend raises a plain error on every call
    with pytest.raises(MirrorError) as caught:
        await mirror.add_members("dual", [Member("a"), Member("b")])
    assert isinstance(caught.value.results["fake"], RuntimeError)
    assert caught.value.results["batch"].applied == 2  # type: ignore[union-attr]
    assert set(emulators.batch.members("dual")) == {"a", "b"}


async def test_a_mirror_checks_input_against_every_backend(batch: BatchBackend) -> None:
    mirror = Mirror({"fake": FakeBackend(), "batch": batch})
    await mirror.create_audience("dual")
    with pytest.raises(ValidationError):
        await mirror.add_members("dual", [Member("ok"), Member("bad", attributes={"k": {}})])


# -- AudienceWriter -----------------------------------------------------------------------------


async def test_many_tasks_coalesce_into_few_bulk_calls() -> None:
    fake = FakeBackend(chunk_size=1_000)
    audience = await fake.create_audience("svc")
    async with (
        AudienceWriter(fake, audience.id, max_batch=500, max_delay=0.05) as writer,
        anyio.create_task_group() as tg,
    ):
        for task in range(20):

            async def work(task: int = task) -> None:
                for i in range(100):
                    await writer.add(Member(f"t{task}-{i}"))

            tg.start_soon(work)
    assert len(fake.members(audience.id)) == 2_000
    writes = [c for c in fake.calls if c.method == "write"]
    assert 4 <= len(writes) <= 8  # 2,000 operations, at most 500 a call
    assert writer.applied == 2_000


async def test_the_queue_is_bounded(audiencekit_clock: object) -> None:
    fake = FakeBackend(polls_to_apply=0)
    audience = await fake.create_audience("svc")
    release = anyio.Event()
    original = fake.apply

    async def slow_apply(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        await release.wait()
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    fake.apply = slow_apply  # type: ignore[method-assign]
    queued = 0
    async with (
        AudienceWriter(fake, audience.id, max_batch=2, max_delay=0.01, max_queue=3) as writer,
        anyio.create_task_group() as tg,
    ):

        async def producer() -> None:
            nonlocal queued
            for i in range(20):
                await writer.add(Member(f"m{i}"))
                queued += 1

        tg.start_soon(producer)
        await anyio.sleep(0.1)
        assert queued <= 2 + 3 + 1  # one batch taken, the queue full, one waiting
        release.set()
    assert len(fake.members(audience.id)) == 20


async def test_failures_are_raised_not_only_logged() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    fake.fail_id("bad", BadRequestError("no", provider="fake", status=400))

    async def write() -> None:
        async with AudienceWriter(fake, audience.id, max_delay=0.01) as writer:
            await writer.add(Member("good"))
            await writer.add(Member("bad"))

    with pytest.raises(PartialFailureError) as caught:
        await write()
    assert set(caught.value.result.failed) == {"bad"}
    assert set(fake.members(audience.id)) == {"good"}


async def test_flush_applies_and_raises() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    fake.fail_id("bad", BadRequestError("no", provider="fake", status=400))
    async with AudienceWriter(fake, audience.id, max_delay=60) as writer:
        await writer.add(Member("a"))
        await writer.flush()
        assert set(fake.members(audience.id)) == {"a"}  # no 60 s wait: flush sent it
        await writer.add(Member("bad"))
        with pytest.raises(PartialFailureError):
            await writer.flush()
        await writer.remove("a")
        await writer.flush()  # the failure was reported once; nothing new failed
    assert fake.members(audience.id) == {}


async def test_bad_input_raises_at_the_call() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    async with AudienceWriter(fake, audience.id) as writer:
        with pytest.raises(ValidationError):
            await writer.remove("")
        with pytest.raises(ValidationError):
            await writer.add(Member(5))  # type: ignore[arg-type]
    assert [c.method for c in fake.calls if c.method == "write"] == []


async def test_a_writer_must_be_entered() -> None:
    fake = FakeBackend()
    writer = AudienceWriter(fake, "a")
    with pytest.raises(RuntimeError, match="async with"):
        await writer.add(Member("x"))


# -- AudienceWriter: the shutdown contract --------------------------------------------------------


def failing_on_call(fake: FakeBackend, call: int, error: Exception) -> anyio.Event:
    """Make the fake's ``call``-th bulk call raise ``error`` once ``release`` is set."""
    original = fake.apply
    calls = 0
    release = anyio.Event()

    async def apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        await release.wait()
        if calls == call:
            raise error
        return await original(*args, **kwargs)

    fake.apply = apply  # type: ignore[method-assign]
    return release


async def test_a_failing_bulk_call_hands_back_what_was_queued_and_releases_flushes() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    timeout = PollTimeoutError("not confirmed", pending=[], waited=1.0)
    release = failing_on_call(fake, 2, timeout)
    writer = AudienceWriter(fake, audience.id, max_batch=10, max_delay=60, max_queue=100)

    async def serve() -> None:
        async with writer:
            for i in range(10):  # the first call
                await writer.add(Member(f"a{i}"))
            for i in range(10):  # the second call, which fails
                await writer.add(Member(f"b{i}"))
            for i in range(25):  # queued behind it
                await writer.add(Member(f"c{i}"))
            async with anyio.create_task_group() as tg:
                flushed = anyio.Event()

                async def flush() -> None:
                    with pytest.raises(WriterStoppedError):
                        await writer.flush()
                    flushed.set()

                tg.start_soon(flush)
                release.set()
                with anyio.fail_after(5):  # a flush behind the failure returns
                    await flushed.wait()
            with pytest.raises(WriterStoppedError):
                await writer.add(Member("late"))

    with pytest.raises(WriterStoppedError) as at_exit:
        await serve()
    stopped = at_exit.value
    assert stopped.__cause__ is timeout
    assert [op.id for op in stopped.unsent] == [f"c{i}" for i in range(25)]
    assert writer.unsent == list(stopped.unsent)
    assert set(fake.members(audience.id)) == {f"a{i}" for i in range(10)}


async def test_a_cancelled_writer_hands_back_every_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    release = failing_on_call(fake, 0, RuntimeError("never raised"))  # every call waits
    writer = AudienceWriter(fake, audience.id, max_batch=10, max_delay=0.01, max_queue=100)
    with anyio.move_on_after(0.5) as scope:
        async with writer:
            for i in range(45):
                await writer.add(Member(f"m{i}"))
            await writer.flush()  # cancelled while the first call waits
    assert scope.cancel_called
    release.set()
    cut, unsent = set(writer.unknown), {op.id for op in writer.unsent}
    assert len(cut) == 10
    assert not cut & unsent
    assert cut | unsent == {f"m{i}" for i in range(45)}  # every operation is accounted for
    assert fake.members(audience.id) == {}
    assert "35 operation(s) not sent" in caplog.text


async def test_failures_of_the_last_flush_are_reported_when_the_block_raises() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    fake.fail_id("bad", BadRequestError("no", provider="fake", status=400))

    async def write() -> None:
        async with AudienceWriter(fake, audience.id, max_delay=60) as writer:
            await writer.add(Member("good"))
            await writer.add(Member("bad"))
            raise KeyError("the service's own error")

    with pytest.raises(PartialFailureError) as caught:
        await write()
    assert set(caught.value.result.failed) == {"bad"}
    assert isinstance(caught.value.__context__, KeyError)
    assert set(fake.members(audience.id)) == {"good"}


async def test_a_writer_with_a_state_store_holds_the_lease_and_journals(
    batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("svc")
    async with AudienceWriter(batch, "svc", state=state, max_delay=0.01) as writer:
        for i in range(30):
            await writer.add(Member(f"u{i}", attributes={"n": i}))
        with pytest.raises(AudienceBusyError):
            await sync(batch, "svc", [], state=state)
        await writer.remove("u0")
    held = emulators.batch.members("svc")
    assert set(held) == {f"u{i}" for i in range(1, 30)}
    assert state.pushed(scope_of(batch), "svc") == {k: fingerprint(v) for k, v in held.items()}


async def test_a_cancel_while_a_batch_is_being_gathered_hands_it_back() -> None:
    fake = FakeBackend()
    audience = await fake.create_audience("svc")
    writer = AudienceWriter(fake, audience.id, max_batch=100, max_delay=60)
    with anyio.move_on_after(0.3):
        async with writer:
            for i in range(5):  # taken from the queue into a batch that waits for more
                await writer.add(Member(f"m{i}"))
            await anyio.sleep(5)
    assert [op.id for op in writer.unsent] == [f"m{i}" for i in range(5)]
    assert writer.unknown == {}
    assert fake.members(audience.id) == {}
