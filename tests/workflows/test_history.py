"""The run history: every sync, migrate, bulk call and retry with a state store writes one row,
with the ids it did not apply; retry writes those again (issue 25, item 3)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from audiencekit import Member
from audiencekit.errors import (
    BadRequestError,
    NotFoundError,
    PartialFailureError,
    RunHistoryError,
    StateStoreError,
)
from audiencekit.progress import ChunkDone, ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import RunOutcome, RunRecord, SqliteStateStore, StateStore, scope_of
from audiencekit.state.postgres import PostgresStateStore
from audiencekit.testing import EmulatorServer, FakeBackend, Fault, FaultPlan, Timing
from audiencekit.workflows import migrate, ops_from_members, recording, retry, sync

from ..conftest import Connect
from ..state.test_conformance import SQLITE_0_2

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """A new store: a SQLite file, or a PostgreSQL database."""
    opened: StateStore
    if request.param == "sqlite":
        opened = SqliteStateStore(tmp_path / "s.sqlite3")
    else:
        opened = PostgresStateStore(request.getfixturevalue("postgres_url"))
    with opened:
        yield opened


def people(ids: range, plan: str = "gold") -> list[Member]:
    return [Member(f"user-{i}", attributes={"plan": plan, "rank": i}) for i in ids]


def updates(emulators: EmulatorServer) -> int:
    return sum(1 for r in emulators.batch.requests if r.path.endswith("/update"))


def only_run(store: StateStore, scope: str) -> RunRecord:
    (record,) = store.runs(scope)
    return record


async def test_a_sync_with_failed_and_unknown_ids_is_recorded_and_retried(
    connect: Connect, store: StateStore, emulators: EmulatorServer
) -> None:
    batch = connect(BatchBackend, chunk_size=100, concurrency=1)  # one chunk at a time
    emulators.batch.config.index_polls = 0
    await batch.create_audience("hist")
    await sync(batch, "hist", people(range(300)), state=store)
    desired = people(range(100, 400), plan="silver")  # 100 removed, 200 changed, 100 added
    # In id order, 4 chunks of 100: the second is applied but its answer lost (unknown); the
    # third is refused, and so are both its halves (failed).
    emulators.batch.set_faults(FaultPlan([
        Fault.http_status(202, "POST */audiences/update", timing=Timing.AFTER, calls=[2]),
        Fault.http_status(400, "POST */audiences/update", calls=[3, 4, 5]),
    ]))  # fmt: skip
    report = await sync(batch, "hist", desired, state=store, raise_on_failure=False)
    assert (len(report.result.failed), len(report.result.unknown)) == (100, 100)

    latest, first = store.runs(scope_of(batch))
    assert first.outcome == "ok"
    assert (latest.kind, latest.outcome, latest.error_type) == ("sync", "partial", None)
    assert (latest.provider, latest.scope, latest.audience) == ("batch", scope_of(batch), "hist")
    assert latest.journalled
    assert latest.started_at <= latest.ended_at
    assert latest.counts == {
        "applied": report.result.applied, "failed": 100, "unknown": 100,
        "added": 100, "changed": 200, "removed": 100, "unchanged": 0,
    }  # fmt: skip
    outcomes = {o.id: o for o in store.run_outcomes(latest.id)}
    assert {k: o.status for k, o in outcomes.items()} == {
        **dict.fromkeys(report.result.failed, "failed"),
        **dict.fromkeys(report.result.unknown, "unknown"),
    }
    wanted = {m.id: dict(m.attributes) for m in desired}
    for member_id, outcome in outcomes.items():
        if member_id in wanted:
            assert (outcome.op, outcome.attributes) == ("add", wanted[member_id])
        else:
            assert (outcome.op, outcome.attributes) == ("remove", None)
    # One reason per cause: the error's class, status and the provider's code, no message.
    assert {o.reason for o in outcomes.values()} == {
        "UnexpectedResponseError", "BadRequestError 400 [INVALID_PARAMETER]",
    }  # fmt: skip
    assert emulators.batch.members("hist") != wanted  # the failed chunk is missing

    emulators.batch.set_faults(FaultPlan())
    emulators.batch.requests.clear()
    retried = await retry(batch, store, latest.id[:8])  # a prefix of the id will do
    assert retried.result.ok
    assert retried.retried == latest
    assert retried.sent == 200
    assert retried.added + retried.removed == 200
    assert emulators.batch.members("hist") == wanted  # the provider holds them now
    again = store.run(retried.run.id)
    assert again == retried.run
    assert (again.kind, again.parent, again.outcome) == ("retry", latest.id, "ok")
    assert again.counts["sent"] == 200
    assert list(store.run_outcomes(again.id)) == []

    # The journal knows what the retry wrote: the next sync sends nothing.
    emulators.batch.requests.clear()
    after = await sync(batch, "hist", desired, state=store)
    assert after.sent == 0
    assert updates(emulators) == 0


async def test_a_sync_that_raises_records_a_failed_run_with_the_error_type(
    batch: BatchBackend, store: StateStore
) -> None:
    with pytest.raises(NotFoundError):
        await sync(batch, "never-made", people(range(3)), state=store)
    record = only_run(store, scope_of(batch))
    assert (record.outcome, record.error_type, record.audience) == (
        "failed", "NotFoundError", "never-made",
    )  # fmt: skip
    assert record.counts == {"applied": 0, "failed": 0, "unknown": 0}


async def test_a_sync_that_raises_partial_failure_keeps_its_outcome_and_ids(
    store: StateStore,
) -> None:
    fake = FakeBackend()
    made = await fake.create_audience("strict")
    fake.fail_id("user-1", BadRequestError("no", provider="fake", status=400, code="E1"))
    with pytest.raises(PartialFailureError):
        await sync(fake, made.id, people(range(3)), state=store)
    record = only_run(store, scope_of(fake))
    assert (record.outcome, record.error_type) == ("partial", "PartialFailureError")
    assert list(store.run_outcomes(record.id)) == [
        RunOutcome("user-1", "add", "failed", "BadRequestError 400 [E1]", {"plan": "gold",
                                                                          "rank": 1}),
    ]  # fmt: skip


async def test_a_cancelled_sync_is_recorded_as_interrupted(
    batch: BatchBackend, store: StateStore, emulators: EmulatorServer
) -> None:
    await batch.create_audience("cut")
    batch.concurrency = 1
    with anyio.CancelScope() as scope:

        def cut_after_first_chunk(event: ProgressEvent) -> None:
            if isinstance(event, ChunkDone) and not event.pending:
                scope.cancel()

        await sync(batch, "cut", people(range(30_000)), state=store,
                   on_progress=cut_after_first_chunk)  # fmt: skip
    assert scope.cancel_called
    record = only_run(store, scope_of(batch))
    assert record.outcome == "interrupted"
    assert record.error_type in ("CancelledError", "Cancelled")


async def test_two_accounts_in_one_store_never_see_each_others_runs(
    connect: Connect, store: StateStore
) -> None:
    first = connect(BatchBackend, project_key="project-one")
    second = connect(BatchBackend, project_key="project-two")
    assert scope_of(first) != scope_of(second)
    for backend in (first, second):
        await backend.create_audience("shared-name")
        await sync(backend, "shared-name", people(range(5)), state=store)
    mine, theirs = only_run(store, scope_of(first)), only_run(store, scope_of(second))
    assert mine.id != theirs.id
    assert store.run(theirs.id, scope=scope_of(first)) is None
    with pytest.raises(RunHistoryError) as caught:
        await retry(first, store, theirs.id)
    assert caught.value.scope == scope_of(second)
    assert len(store.runs(scope_of(first))) == 1  # the refused retry recorded nothing


async def test_retry_refuses_an_unknown_or_ambiguous_id(store: StateStore) -> None:
    fake = FakeBackend()
    with pytest.raises(RunHistoryError, match="no run"):
        await retry(fake, store, "0123abc")


async def test_a_bulk_add_and_remove_record_their_runs_and_a_retry_applies_them(
    store: StateStore,
) -> None:
    fake = FakeBackend()
    made = await fake.create_audience("bulk")
    members = [Member(f"m{i}", attributes={"plan": "gold", "n": i}) for i in range(10)]
    refused = BadRequestError("no", provider="fake", status=400)
    fake.fail_id("m3", refused)
    fake.fail_id("m7", refused)
    async with recording(store, fake, made.id, "add") as run:
        result = await fake.add_members(made.id, members, raise_on_failure=False)
        await run.note(result, ops_from_members("add", members))
        run.counts["sent"] = result.operations
    added = only_run(store, scope_of(fake))
    assert (added.kind, added.outcome, added.journalled) == ("add", "partial", False)
    assert added.counts == {"applied": 8, "failed": 2, "unknown": 0, "sent": 10}
    assert [(o.id, o.op, o.attributes) for o in store.run_outcomes(added.id)] == [
        ("m3", "add", {"plan": "gold", "n": 3}), ("m7", "add", {"plan": "gold", "n": 7})
    ]  # fmt: skip

    fake._failing_ids.clear()  # the provider accepts them now
    retried = await retry(fake, store, added.id)
    assert retried.result.ok
    assert retried.added == 2
    held = fake.members(made.id)
    assert set(held) == {f"m{i}" for i in range(10)}
    assert held["m7"].attributes == {"plan": "gold", "n": 7}

    fake.fail_id("m1", refused)
    async with recording(store, fake, made.id, "remove") as run:
        gone = await fake.remove_members(made.id, ["m1", "m2"], raise_on_failure=False)
        await run.note(gone, ops_from_members("remove", None))
    removed = store.runs(scope_of(fake), limit=1)[0]
    assert removed.kind == "remove"
    assert list(store.run_outcomes(removed.id)) == [
        RunOutcome("m1", "remove", "failed", "BadRequestError 400")
    ]


async def test_a_bulk_call_that_raises_is_recorded_and_the_error_propagates(
    store: StateStore,
) -> None:
    fake = FakeBackend()
    with pytest.raises(NotFoundError):
        async with recording(store, fake, "nowhere", "add"):
            await fake.get_audience("nowhere")
    record = only_run(store, scope_of(fake))
    assert (record.kind, record.outcome, record.error_type) == ("add", "failed", "NotFoundError")


async def test_a_store_that_cannot_record_never_masks_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(SqliteStateStore):
        def record_run(self, *args: Any, **kwargs: Any) -> None:
            raise StateStoreError(self.path, "the disk is full")

    fake = FakeBackend()
    made = await fake.create_audience("fine")
    with Broken(tmp_path / "s.sqlite3") as broken, caplog.at_level(logging.WARNING):
        report = await sync(fake, made.id, people(range(3)), state=broken)
        assert report.result.ok
        with pytest.raises(NotFoundError):  # the run's own error, not the store's
            await sync(fake, "missing", people(range(3)), state=broken)
    assert sum("could not record run" in r.getMessage() for r in caplog.records) == 2


async def test_migrate_records_its_run(store: StateStore) -> None:
    source, target = FakeBackend(account="src"), FakeBackend(account="dst")
    made = await source.create_audience("from")
    await source.add_members(made.id, people(range(20)))
    report = await migrate(source, made.id, target, "to", create=True, state=store)
    assert report.ok
    record = only_run(store, scope_of(target))
    assert (record.kind, record.outcome, record.audience) == (
        "migrate",
        "ok",
        report.target_audience,
    )
    assert record.counts["read"] == 20
    assert record.counts["sent"] == 20
    assert store.runs(scope_of(source)) == []


async def test_a_store_of_audiencekit_0_2_opens_and_records_a_sync(tmp_path: Path) -> None:
    path = tmp_path / "0.2.sqlite3"
    db = sqlite3.connect(path)
    with db:
        db.executescript(SQLITE_0_2)
    db.close()
    fake = FakeBackend()
    made = await fake.create_audience("old")
    with StateStore(path) as old:
        await sync(fake, made.id, people(range(4)), state=old)
        assert only_run(old, scope_of(fake)).outcome == "ok"


async def test_a_keyboard_interrupt_is_recorded_as_interrupted_and_propagates(
    store: StateStore,
) -> None:
    fake = FakeBackend()
    with pytest.raises(KeyboardInterrupt):
        async with recording(store, fake, "somewhere", "remove"):
            raise KeyboardInterrupt
    record = only_run(store, scope_of(fake))
    assert (record.kind, record.outcome, record.error_type) == (
        "remove", "interrupted", "KeyboardInterrupt",
    )  # fmt: skip


async def test_a_lookup_that_fails_keeps_the_run_and_its_ids(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBackend()
    made = await fake.create_audience("lookup")
    fake.fail_id("a", BadRequestError("no", provider="fake", status=400))

    def gone(ids: object) -> dict[str, tuple[str, None]]:
        raise OSError("the member file is gone")

    with caplog.at_level(logging.WARNING):
        async with recording(store, fake, made.id, "add") as run:
            result = await fake.add_members(made.id, ["a", "b"], raise_on_failure=False)
            await run.note(result, gone)
    record = only_run(store, scope_of(fake))
    assert (record.outcome, record.error_type) == ("partial", None)
    assert list(store.run_outcomes(record.id)) == [
        RunOutcome("a", "add", "failed", "BadRequestError 400")
    ]
    assert any("could not look up" in r.getMessage() for r in caplog.records)


async def test_recording_refuses_an_unknown_kind_before_the_run(store: StateStore) -> None:
    ran = False
    with pytest.raises(ValueError, match="not 'replace'"):
        async with recording(store, FakeBackend(), "a", "replace"):
            ran = True
    assert not ran
    assert store.runs() == []
