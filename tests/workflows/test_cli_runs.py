"""``audiencekit runs``, ``runs show`` and ``retry``: the run history from the command line, on
SQLite and PostgreSQL, checked against what the Batch emulator received and holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing

from .test_cli import cli, env, updates  # noqa: F401 (env: the command line's environment)

# Every test runs the command line against the session's emulators (``env`` sets its variables).
pytestmark = pytest.mark.usefixtures("env")


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


def ids_file(tmp_path: Path, ids: range, plan: str = "gold") -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(f'{{"id": "u{i:03d}", "plan": "{plan}"}}\n' for i in ids))
    return path


def test_a_partial_add_is_listed_shown_and_retried(
    audiencekit_emulators: EmulatorServer, tmp_path: Path, state: str
) -> None:
    emulators = audiencekit_emulators
    assert cli("audiences", "create", "hist", "-p", "batch").code == 0
    data = ids_file(tmp_path, range(25_000))  # three updates: 10,000, 10,000 and 5,000
    refused = Fault.http_status(403, "POST */audiences/update", calls=[2])
    emulators.batch.set_faults(FaultPlan([refused]))
    added = cli("members", "add", str(data), "-p", "batch", "-a", "hist", "--state", state)
    assert added.code == 3, added.stderr
    hint = added.stdout.strip().splitlines()[-1]
    found = re.search(r"to retry the \S+ id\(s\) that did not make it, run: audiencekit retry "
                      r"([0-9a-f]{12})", hint)  # fmt: skip
    assert found, added.stdout
    short = found.group(1)
    failed = 25_000 - len(emulators.batch.members("hist"))
    assert failed > 0

    listed = cli("runs", "--state", state, "--json")
    assert listed.code == 0, listed.stderr
    (run,) = listed.data
    assert run["id"].startswith(short)
    assert (run["kind"], run["provider"], run["audience"], run["outcome"]) == (
        "add", "batch", "hist", "partial"
    )  # fmt: skip
    assert run["counts"]["failed"] == failed
    assert run["counts"]["applied"] == 25_000 - failed
    table = cli("runs", "--state", state)
    header, row = table.stdout.splitlines()
    assert header.split("\t")[:4] == ["ID", "KIND", "PROVIDER", "AUDIENCE"]
    assert row.startswith(short)

    shown = cli("runs", "show", short, "--state", state, "--json")
    assert shown.code == 0, shown.stderr
    assert shown.data["run"]["id"] == run["id"]
    missing = {f"u{i:03d}" for i in range(25_000)} - set(emulators.batch.members("hist"))
    assert {o["id"] for o in shown.data["outcomes"]} == missing
    assert {(o["op"], o["status"]) for o in shown.data["outcomes"]} == {("add", "failed")}
    assert all("gold" not in str(o) for o in shown.data["outcomes"])  # ids, never attributes
    text = cli("runs", "show", short, "--state", state)
    assert f"{len(missing):,} id(s) did not make it" in text.stdout
    before = cli("runs", "--state", state, "show", short)  # the group's --state, as well
    assert before.stdout == text.stdout

    emulators.batch.set_faults(FaultPlan())
    emulators.batch.requests.clear()
    retried = cli("retry", short, "--state", state, "--json")
    assert retried.code == 0, retried.stderr
    assert retried.data["applied"] == len(missing)
    sent = [op["id"] for r in updates(emulators) for op in r.body["ids"]]
    assert sorted(sent) == sorted(missing)  # only the ids that did not make it
    assert len(emulators.batch.members("hist")) == 25_000
    assert emulators.batch.members("hist")["u000"] == {"plan": "gold"}
    runs = cli("runs", "--state", state, "--json").data
    assert [(r["kind"], r["outcome"], r["parent"]) for r in runs] == [
        ("retry", "ok", run["id"]), ("add", "partial", None)
    ]  # fmt: skip


def test_a_partial_sync_is_retried_and_the_next_sync_sends_nothing(
    audiencekit_emulators: EmulatorServer, tmp_path: Path, state: str
) -> None:
    emulators = audiencekit_emulators
    assert cli("audiences", "create", "synced", "-p", "batch").code == 0
    data = ids_file(tmp_path, range(20_000))
    args = ("members", "sync", str(data), "-p", "batch", "-a", "synced", "--state", state)
    emulators.batch.set_faults(FaultPlan([
        Fault.http_status(202, "POST */audiences/update", timing=Timing.AFTER, calls=[1]),
    ]))  # fmt: skip  # the first update is applied, its answer lost: unknown
    first = cli(*args, "--json")
    assert first.code == 3, first.stderr
    assert len(first.data["unknown"]) == 10_000
    emulators.batch.set_faults(FaultPlan())
    retried = cli("retry", first.data["history_id"][:8], "--state", state)
    assert retried.code == 0, retried.stderr
    emulators.batch.requests.clear()
    again = cli(*args, "--json")
    assert (again.code, again.data["operations"], again.data["unchanged"]) == (0, 0, 20_000)
    assert updates(emulators) == []


def test_an_unknown_run_is_one_line_and_exit_2(tmp_path: Path) -> None:
    state = str(tmp_path / "s.sqlite3")
    assert cli("runs", "--state", state, "--json").data == []
    for argv in (("runs", "show", "abc123"), ("retry", "abc123")):
        shown = cli(*argv, "--state", state, "--json")
        assert shown.code == 2
        assert shown.error["type"] == "RunHistoryError"
        assert "abc123" in shown.error["message"]


def test_a_partial_migration_prints_the_retry_which_completes_it(
    audiencekit_emulators: EmulatorServer, tmp_path: Path
) -> None:
    emulators = audiencekit_emulators
    made = cli("--json", "audiences", "create", "src", "-p", "dexatel", "--channel", "SMS").data
    numbers = ({"number": f"+1555{i:07d}"} for i in range(15_000))
    emulators.dexatel.seed_contacts(made["id"], numbers)
    state = str(tmp_path / "s.sqlite3")
    refused = Fault.http_status(403, "POST */audiences/update", calls=[1])
    emulators.batch.set_faults(FaultPlan([refused]))
    moved = cli("migrate", "--from", "dexatel:src", "--to", "batch:dst", "--create",
                "--state", state)  # fmt: skip
    assert moved.code == 3, moved.stderr
    command = moved.stdout.strip().splitlines()[-1].split("run: ", 1)[1].split()
    assert command[:2] == ["audiencekit", "retry"]
    assert len(emulators.batch.members("dst")) < 15_000
    emulators.batch.set_faults(FaultPlan())
    assert cli(*command[1:]).code == 0
    assert len(emulators.batch.members("dst")) == 15_000
