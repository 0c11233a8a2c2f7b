"""The audiencekit command, driven as a user would, against the emulators."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audiencekit import __version__
from audiencekit.cli import main
from audiencekit.testing import EmulatorServer, Fault, FaultPlan


@pytest.fixture
def env(
    audiencekit_emulators: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> EmulatorServer:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the default --state lives here
    ends = audiencekit_emulators.endpoints
    monkeypatch.setenv("DEXATEL_API_KEY", ends.dexatel_key)
    monkeypatch.setenv("DEXATEL_BASE_URL", ends.dexatel_url)
    monkeypatch.setenv("BATCH_API_KEY", ends.batch_key)
    monkeypatch.setenv("BATCH_PROJECT_KEY", ends.batch_project)
    monkeypatch.setenv("BATCH_BASE_URL", ends.batch_url)
    return audiencekit_emulators


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_audiences(env: EmulatorServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, made = run(capsys, "audiences", "create", "vip", "--provider", "dexatel",
                     "--channel", "SMS")  # fmt: skip
    assert code == 0
    assert made["channel"] == "SMS"
    code, listed = run(capsys, "audiences", "list", "--provider", "dexatel")
    assert [a["name"] for a in listed] == ["vip"]
    code, shown = run(capsys, "audiences", "show", made["id"], "--provider", "dexatel")
    assert shown["size"] == 0
    code, _ = run(capsys, "audiences", "delete", made["id"], "--provider", "dexatel")
    assert code == 0
    assert run(capsys, "audiences", "list", "--provider", "dexatel")[1] == []


def test_members_from_csv_jsonl_and_stdin(
    env: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(capsys, "audiences", "create", "users", "--provider", "batch")[0] == 0
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("id,plan\nu1,gold\nu2,\nu3,silver\n", encoding="utf-8")
    code, result = run(capsys, "members", "add", str(csv_file), "--provider", "batch",
                       "--audience", "users")  # fmt: skip
    assert code == 0
    assert result["applied"] == 3
    assert env.batch.members("users") == {
        "u1": {"plan": "gold"},
        "u2": {},
        "u3": {"plan": "silver"},
    }

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"id": "u4", "attributes": {"n": 1}}\n\n{"id": "u5", "vip": true}\n')
    assert run(capsys, "members", "add", str(jsonl), "--provider", "batch",
               "--audience", "users")[0] == 0  # fmt: skip
    assert env.batch.members("users")["u5"] == {"vip": True}

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"id": "u1"}\n')))
    assert run(capsys, "members", "remove", "-", "--provider", "batch",
               "--audience", "users")[0] == 0  # fmt: skip
    assert "u1" not in env.batch.members("users")


def test_sync_with_a_state_file(
    env: EmulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "audiences", "create", "synced", "--provider", "batch")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"id": "u{i}"}}\n' for i in range(50)))
    state = str(tmp_path / "state.sqlite3")
    args = ("members", "sync", str(data), "--provider", "batch", "--audience", "synced",
            "--state", state)  # fmt: skip
    assert run(capsys, *args)[1]["applied"] == 50
    env.batch.requests.clear()
    code, again = run(capsys, *args)
    assert code == 0
    assert again["operations"] == 0
    assert [r for r in env.batch.requests if r.path.endswith("/update")] == []


def test_migrate_dry_run_then_for_real(
    env: EmulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, made = run(capsys, "audiences", "create", "src", "--provider", "dexatel",
                     "--channel", "SMS")  # fmt: skip
    env.dexatel.seed_contacts(made["id"], ({"number": f"+1555{i:07d}"} for i in range(120)))
    state = str(tmp_path / "s.sqlite3")
    route = ("migrate", "--from", f"dexatel:{made['id']}", "--to", "batch:dst", "--create",
             "--state", state)  # fmt: skip
    code, dry = run(capsys, *route, "--dry-run")
    assert code == 0
    assert (dry["dry_run"], dry["sent"]) == (True, 120)
    code, report = run(capsys, *route)
    assert code == 0
    assert report["verified"] is True
    assert len(env.batch.members("dst")) == 120


def test_exit_codes(
    env: EmulatorServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["audiences", "explode", "--provider", "batch"])
    assert usage.value.code == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "u1", "attributes": {"a b": 1}}\n')
    run(capsys, "audiences", "create", "codes", "--provider", "batch")
    assert run(capsys, "members", "add", str(bad), "--provider", "batch",
               "--audience", "codes")[0] == 2  # fmt: skip

    env.batch.set_faults(FaultPlan([Fault.http_status(400, "POST */update")]))
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "u1"}\n')
    code, result = run(capsys, "members", "add", str(good), "--provider", "batch",
                       "--audience", "codes")  # fmt: skip
    assert code == 3
    assert list(result["failed"]) == ["u1"]

    assert run(capsys, "audiences", "show", "nope", "--provider", "batch")[0] == 1
    monkeypatch.delenv("BATCH_API_KEY")
    assert run(capsys, "audiences", "list", "--provider", "batch")[0] == 2
    captured = capsys.readouterr()
    assert env.endpoints.batch_key not in captured.out + captured.err


def test_the_demo_verifies_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = run(capsys, "demo", "--contacts", "600")
    assert code == 0
    assert summary["verified"] is True
    assert summary["dexatel_contacts"] == summary["batch_members"] == 600
    assert summary["faults_survived"] > 0


@pytest.mark.slow
def test_the_installed_command_runs_the_full_demo() -> None:
    """What the README's first command runs: the console script, 20,000 contacts."""
    script = Path(sys.executable).with_name("audiencekit")
    done = subprocess.run(
        [str(script), "--json", "demo"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["verified"] is True
    assert summary["batch_members"] == 20_000


def test_python_dash_m_audiencekit_runs_the_command_line() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "audiencekit", "--version"], capture_output=True, text=True
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"audiencekit {__version__}")
    helped = subprocess.run(
        [sys.executable, "-m", "audiencekit", "emulator", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: audiencekit emulator")


def test_the_state_store_defaults_to_the_users_data_directory(
    env: EmulatorServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Not a shared file in the temporary directory: the user's own, shown in --help."""
    expected = tmp_path / "data" / "audiencekit" / "state.sqlite3"
    with pytest.raises(SystemExit):
        main(["migrate", "--help"])
    assert str(expected) in "".join(capsys.readouterr().out.split())  # wrapped by argparse
    assert run(capsys, "audiences", "create", "defaults", "--provider", "batch")[0] == 0
    members = tmp_path / "m.csv"
    members.write_text("id\nu1\nu2\n", encoding="utf-8")
    code, result = run(capsys, "members", "sync", str(members), "--provider", "batch",
                       "--audience", "defaults")  # fmt: skip
    assert (code, result["applied"]) == (0, 2)
    assert expected.is_file()
    assert set(env.batch.members("defaults")) == {"u1", "u2"}
