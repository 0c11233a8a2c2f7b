"""SIGTERM stops a writing command as Ctrl-C does: what was in flight is finished or journalled,
the run says what it did and how to continue (exit 143), and the run it names converges without
writing any member twice. Real processes, since a signal is what is under test."""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from audiencekit.testing import EmulatorServer, Fault, FaultPlan

from .test_cli import SCRIPT, _variables, cli

STOPPED = re.compile(
    r"stopped by SIGTERM after ([\d,]+) id\(s\) were applied; to continue, run: (.+)"
)


@pytest.fixture
def env(
    audiencekit_emulators: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> EmulatorServer:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name, value in _variables(audiencekit_emulators).items():
        monkeypatch.setenv(name, value)
    return audiencekit_emulators


def _created(server: EmulatorServer) -> collections.Counter[str]:
    """How many times Dexatel accepted a new contact, by number."""
    return collections.Counter(
        (r.body.get("data", r.body))["number"]
        for r in server.dexatel.requests
        if r.method == "POST" and r.path.endswith("/contacts") and 200 <= r.status < 300
    )


def _held(server: EmulatorServer, audience_id: str) -> set[str]:
    return {
        c["number"]
        for account in server.dexatel.snapshot().values()
        for a in account["audiences"]
        if a["id"] == audience_id
        for c in a["contacts"]
    }


def _terminate_midway(server: EmulatorServer, argv: Sequence[str], tmp_path: Path) -> str:
    """Run ``argv``, SIGTERM it once Dexatel has created a few chunks of contacts; return the
    command the run printed to continue, after checking its exit code and its last line."""
    child_env = {**os.environ, **_variables(server), "XDG_DATA_HOME": str(tmp_path / "data")}
    child = subprocess.Popen([str(SCRIPT), *argv], env=child_env, stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while sum(_created(server).values()) < 400 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before it could be stopped"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    assert "Traceback" not in stderr
    stopped = STOPPED.search(stderr.strip().splitlines()[-1])
    assert stopped, stderr
    applied = int(stopped[1].replace(",", ""))
    assert 0 < applied < 1_500
    return stopped[2]


def _rerun(server: EmulatorServer, command: str, tmp_path: Path) -> dict[str, object]:
    words = shlex.split(command)
    assert words[0] == "audiencekit"
    child_env = {**os.environ, **_variables(server), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([str(SCRIPT), "--json", *words[1:]], env=child_env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_sigterm_stops_members_sync_and_the_printed_command_converges(
    env: EmulatorServer, tmp_path: Path
) -> None:
    made = cli("--json", "audiences", "create", "term", "-p", "dexatel", "--channel", "SMS").data
    wanted = {f"+1555{i:07d}" for i in range(1_500)}
    members = tmp_path / "m.csv"
    members.write_text("number\n" + "\n".join(sorted(wanted)) + "\n")
    env.dexatel.set_faults(FaultPlan([Fault.slow(0.05, "POST */contacts")]))
    argv = ["members", "sync", str(members), "-p", "dexatel", "-a", "term",
            "--state", str(tmp_path / "s.sqlite3")]  # fmt: skip

    command = _terminate_midway(env, argv, tmp_path)
    held = _held(env, made["id"])
    assert 0 < len(held) < len(wanted)
    assert held <= wanted

    env.dexatel.set_faults(FaultPlan())
    result = _rerun(env, command, tmp_path)
    assert result["ok"] is True
    assert _held(env, made["id"]) == wanted
    created = _created(env)
    assert set(created) == wanted
    assert max(created.values()) == 1  # no member was written twice


def test_sigterm_stops_migrate_and_resume_converges(env: EmulatorServer, tmp_path: Path) -> None:
    made = cli("--json", "audiences", "create", "src", "-p", "dexatel", "--channel", "SMS").data
    wanted = {f"+1444{i:07d}" for i in range(1_500)}
    env.dexatel.seed_contacts(made["id"], ({"number": n} for n in wanted))
    env.dexatel.set_faults(FaultPlan([Fault.slow(0.05, "POST */contacts")]))
    argv = ["migrate", "--from", "dexatel:src", "--to", "dexatel:dst", "--create",
            "--channel", "SMS", "--state", str(tmp_path / "s.sqlite3")]  # fmt: skip

    command = _terminate_midway(env, argv, tmp_path)
    assert shlex.split(command)[-1] == "--resume"

    env.dexatel.set_faults(FaultPlan())
    result = _rerun(env, command, tmp_path)
    assert result["verified"] is True
    (target,) = [
        a["id"]
        for account in env.dexatel.snapshot().values()
        for a in account["audiences"]
        if a["name"] == "dst"
    ]
    assert _held(env, target) == wanted
    created = _created(env)
    assert set(created) == wanted
    assert max(created.values()) == 1
