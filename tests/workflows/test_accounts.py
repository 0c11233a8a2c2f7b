"""One state store, many accounts: every row is the account's own (issue: a store shared by
two accounts mixed their journals, so a sync "removed" members it never held)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from audiencekit import Member
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore, scope_of
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import migrate, sync

from ..conftest import Connect

pytestmark = pytest.mark.anyio


def people(ids: range, plan: str) -> list[Member]:
    return [Member(f"u{i}", attributes={"plan": plan}) for i in ids]


def held(members: list[Member]) -> dict[str, dict[str, object]]:
    return {m.id: dict(m.attributes) for m in members}


async def test_two_batch_projects_sync_through_one_store_and_each_holds_its_own(
    connect: Connect, state: StateStore, emulators: EmulatorServer
) -> None:
    first = connect(BatchBackend, project_key="project_one", rate_limit=None)
    second = connect(BatchBackend, project_key="project_two", rate_limit=None)
    assert scope_of(first) != scope_of(second)
    assert "project_one" not in scope_of(first)  # a fingerprint, never the key
    for backend in (first, second):
        await backend.create_audience("vip")

    # Interleaved, with the same audience name and overlapping ids in both projects.
    await sync(first, "vip", people(range(300), "gold"), state=state)
    await sync(second, "vip", people(range(100, 400), "gold"), state=state)
    one = people(range(50, 250), "gold")
    two = people(range(200), "gold") + people(range(350, 400), "silver")
    emulators.batch.requests.clear()
    report_one = await sync(first, "vip", one, state=state)
    report_two = await sync(second, "vip", two, state=state)

    emulators.batch.apply_pending()
    assert emulators.batch.members("vip", "project_one") == held(one)
    assert emulators.batch.members("vip", "project_two") == held(two)
    assert (report_one.added, report_one.removed) == (0, 100)
    assert (report_two.added, report_two.changed, report_two.removed) == (100, 50, 150)
    assert (await sync(first, "vip", one, state=state)).sent == 0
    assert (await sync(second, "vip", two, state=state)).sent == 0


async def test_two_dexatel_accounts_migrate_into_two_batch_projects_through_one_store(
    connect: Connect, state: StateStore, emulators: EmulatorServer
) -> None:
    emulators.dexatel.config.keys = {"dx-key-one": "one", "dx-key-two": "two"}
    sources = [connect(DexatelBackend, api_key=f"dx-key-{n}") for n in ("one", "two")]
    targets = [
        connect(BatchBackend, project_key=f"project_{n}", rate_limit=None) for n in ("one", "two")
    ]
    numbers = {0: range(40), 1: range(20, 60)}  # overlapping numbers, one audience name
    for n, source in enumerate(sources):
        made = await source.create_audience("src", channel="SMS")
        emulators.dexatel.seed_contacts(
            made.id, ({"number": f"+1555{i:07d}", "first_name": f"a{n}"} for i in numbers[n])
        )

    for source, target in zip(sources, targets, strict=True):  # one run id each
        report = await migrate(source, "src", target, "dst", create=True, state=state)
        assert report.ok
        assert report.verified is True
    emulators.batch.apply_pending()
    for n in (0, 1):
        expected = {f"+1555{i:07d}": {"first_name": f"a{n}"} for i in numbers[n]}
        assert emulators.batch.members("dst", f"project_{('one', 'two')[n]}") == expected
        assert set(state.pushed(scope_of(targets[n]), "dst")) == set(expected)


async def test_a_store_written_by_0_1_belongs_to_the_first_account_that_opens_it(
    connect: Connect, tmp_path: Path, emulators: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite3"
    first = connect(BatchBackend, project_key="project_one", rate_limit=None)
    second = connect(BatchBackend, project_key="project_two", rate_limit=None)
    for backend in (first, second):
        await backend.create_audience("vip")
    await first.add_members("vip", people(range(10), "gold"))
    with sqlite3.connect(path) as db:  # what audiencekit 0.1 wrote for project_one's sync
        db.executescript(
            "CREATE TABLE pushed (scope TEXT NOT NULL, audience TEXT NOT NULL, member TEXT NOT "
            "NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'settled', handle "
            "TEXT, PRIMARY KEY (scope, audience, member)) WITHOUT ROWID; CREATE TABLE "
            "checkpoints (run TEXT PRIMARY KEY, data TEXT NOT NULL, updated TEXT NOT NULL "
            "DEFAULT CURRENT_TIMESTAMP); CREATE TABLE leases (key TEXT PRIMARY KEY, owner TEXT "
            "NOT NULL, expires REAL NOT NULL); PRAGMA user_version = 2;"
        )
        db.executemany(
            "INSERT INTO pushed (scope, audience, member, fingerprint) VALUES (?, ?, ?, ?)",
            [("batch", "vip", m.id, "f") for m in people(range(10), "gold")],
        )
    db.close()

    with StateStore(path) as store, caplog.at_level(logging.WARNING, "audiencekit.state"):
        report = await sync(first, "vip", people(range(5), "gold"), state=store)
        assert report.removed == 5  # it knew what it had pushed
        claimed = [r.getMessage() for r in caplog.records if "audiencekit 0.1" in r.getMessage()]
        assert len(claimed) == 1
        assert scope_of(first) in claimed[0]
        report = await sync(second, "vip", people(range(3), "gold"), state=store)
        assert (report.added, report.removed) == (3, 0)  # nothing of the first's is the second's
    emulators.batch.apply_pending()
    assert set(emulators.batch.members("vip", "project_one")) == {f"u{i}" for i in range(5)}
    assert set(emulators.batch.members("vip", "project_two")) == {f"u{i}" for i in range(3)}
