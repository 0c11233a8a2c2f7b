"""The audiencekit command, driven as a user would (through click's test runner), against the
emulators; what the providers received is checked on the emulators' request logs."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from audiencekit import __version__
from audiencekit.cli._app import build_app
from audiencekit.testing import EmulatorServer, Fault, FaultPlan

SCRIPT = Path(sys.executable).with_name("audiencekit")


@pytest.fixture
def env(
    audiencekit_emulators: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    batch_unpaced: None,
) -> EmulatorServer:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the default --state lives here
    for name, value in _variables(audiencekit_emulators).items():
        monkeypatch.setenv(name, value)
    return audiencekit_emulators


def _variables(server: EmulatorServer) -> dict[str, str]:
    ends = server.endpoints
    return {
        "DEXATEL_API_KEY": ends.dexatel_key,
        "DEXATEL_BASE_URL": ends.dexatel_url,
        "BATCH_API_KEY": ends.batch_key,
        "BATCH_PROJECT_KEY": ends.batch_project,
        "BATCH_BASE_URL": ends.batch_url,
    }


@attrs.frozen
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def data(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error(self) -> dict[str, Any]:
        """The JSON error of a ``--json`` run: one object, on one line of stderr."""
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        error: dict[str, Any] = json.loads(lines[0])["error"]
        assert error["exit_code"] == self.code
        return error


def cli(*args: str, input: str | bytes | None = None) -> Run:
    """One run of the command; never a traceback, whatever happens."""
    result = CliRunner().invoke(build_app(), list(args), input=input, catch_exceptions=False)
    run = Run(result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    return run


def updates(server: EmulatorServer) -> list[Any]:
    return [r for r in server.batch.requests if r.path.endswith("/update")]


# -- what the README shows ------------------------------------------------------------------


def test_audiences_in_the_readmes_order_with_options_anywhere(env: EmulatorServer) -> None:
    made = cli("audiences", "create", "--provider", "dexatel", "vip", "--channel", "SMS", "--json")
    assert made.code == 0, made.stderr
    assert (made.data["name"], made.data["channel"]) == ("vip", "SMS")
    again = cli("--json", "audiences", "create", "vip", "-p", "dexatel", "--channel", "sms",
                "--exist-ok")  # fmt: skip
    assert (again.code, again.data["id"]) == (0, made.data["id"])
    held = [a for account in env.dexatel.snapshot().values() for a in account["audiences"]]
    assert [a["name"] for a in held] == ["vip"]

    listed = cli("audiences", "list", "--provider", "dexatel")
    header, *rows = listed.stdout.splitlines()
    assert header.split("\t") == ["ID", "NAME", "CHANNEL", "SIZE", "CREATED_AT"]
    assert [row.split("\t")[:3] for row in rows] == [[made.data["id"], "vip", "SMS"]]
    assert "None" not in listed.stdout

    shown = cli("audiences", "show", "vip", "--provider", "dexatel")
    assert "size        0" in shown.stdout
    assert cli("audiences", "delete", "vip", "--provider", "dexatel").code == 0
    assert cli("--json", "audiences", "list", "--provider", "dexatel").data == []


def test_members_from_csv_jsonl_and_stdin(env: EmulatorServer, tmp_path: Path) -> None:
    assert cli("audiences", "create", "users", "--provider", "batch").code == 0
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("id,plan\nu1,gold\nu2,\nu3,silver\n", encoding="utf-8")
    added = cli("members", "add", str(csv_file), "--provider", "batch", "--audience", "users",
                "--json")  # fmt: skip
    assert (added.code, added.data["applied"], added.data["rows"]) == (0, 3, 3)
    assert env.batch.members("users") == {
        "u1": {"plan": "gold"},
        "u2": {},
        "u3": {"plan": "silver"},
    }

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"id": "u4", "attributes": {"n": 1}}\n\n{"id": "u5", "vip": true}\n')
    shown = cli("members", "add", str(jsonl), "-p", "batch", "-a", "users")
    assert shown.code == 0
    assert shown.stdout.startswith("added 2 of 2 (2 row(s) read;")
    assert env.batch.members("users")["u5"] == {"vip": True}

    removed = cli("members", "remove", "-", "-p", "batch", "-a", "users", input='{"id": "u1"}\n')
    assert removed.code == 0, removed.stderr
    assert "u1" not in env.batch.members("users")

    excel = tmp_path / "excel.csv"  # a byte-order mark, CRLF, a quoted field over two lines
    excel.write_bytes('id,note\r\nu6,"two\r\nlines"\r\nu7,café\r\n'.encode("utf-8-sig"))
    run = cli("--json", "members", "add", str(excel), "-p", "batch", "-a", "users")
    assert run.code == 0, run.stderr
    assert env.batch.members("users")["u6"] == {"note": "two\r\nlines"}
    assert env.batch.members("users")["u7"] == {"note": "café"}


def test_sync_with_a_state_file(env: EmulatorServer, tmp_path: Path) -> None:
    cli("audiences", "create", "synced", "--provider", "batch")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"id": "u{i}"}}\n' for i in range(50)))
    state = str(tmp_path / "state.sqlite3")
    args = ("members", "sync", str(data), "--provider", "batch", "--audience", "synced",
            "--state", state, "--json")  # fmt: skip
    first = cli(*args)
    assert (first.data["applied"], first.data["added"]) == (50, 50)
    env.batch.requests.clear()
    again = cli(*args)
    assert (again.code, again.data["operations"], again.data["unchanged"]) == (0, 0, 50)
    assert updates(env) == []

    # 10 changed, 30 kept, 10 removed, 5 new: each counted against its own total.
    data.write_text(
        "".join(f'{{"id": "u{i}", "attributes": {{"plan": "x"}}}}\n' for i in range(10))
        + "".join(f'{{"id": "u{i}"}}\n' for i in range(10, 40))
        + "".join(f'{{"id": "n{i}"}}\n' for i in range(5))
    )
    text = cli(*args[:-1])
    assert text.code == 0, text.stderr
    assert text.stdout.startswith(
        "added 5 of 5, changed 10 of 10, removed 10 of 10, unchanged 30 (45 row(s) read;"
    )
    data.write_text("".join(f'{{"id": "u{i}"}}\n' for i in range(20, 40)))  # 10 changed back
    changed = cli(*args)
    assert {k: changed.data[k] for k in ("rows", "added", "changed", "removed", "unchanged")} == {
        "rows": 20,
        "added": 0,
        "changed": 0,
        "removed": 25,
        "unchanged": 20,
    }
    assert changed.data["applied_by_kind"] == {"added": 0, "changed": 0, "removed": 25}
    assert changed.data["applied"] == 25


def test_a_sync_dry_run_prints_the_diff_and_sends_nothing(
    env: EmulatorServer, tmp_path: Path
) -> None:
    cli("audiences", "create", "dry", "--provider", "batch")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"id": "u{i:02d}"}}\n' for i in range(40)))
    state = tmp_path / "state.sqlite3"
    args = ("members", "sync", str(data), "-p", "batch", "-a", "dry", "--state", str(state))
    assert cli(*args).code == 0
    data.write_text(
        '{"id": "u00", "attributes": {"plan": "x"}}\n'
        + "".join(f'{{"id": "u{i:02d}"}}\n' for i in range(1, 25))
        + "".join(f'{{"id": "n{i:02d}"}}\n' for i in range(12))
    )
    env.batch.requests.clear()
    before = state.read_bytes()

    text = cli(*args, "--dry-run")
    assert text.code == 0, text.stderr
    assert text.stdout.splitlines() == [
        "would add 12: " + ", ".join(f"n{i:02d}" for i in range(10)) + ", ...",
        "would change 1: u00",
        "would remove 15: " + ", ".join(f"u{i}" for i in range(25, 35)) + ", ...",
        "unchanged 24 (37 row(s) read; nothing was sent)",
    ]
    shown = cli(*args, "--dry-run", "--json")
    assert {k: shown.data[k] for k in ("dry_run", "added", "changed", "removed", "unchanged")} == {
        "dry_run": True, "added": 12, "changed": 1, "removed": 15, "unchanged": 24,
    }  # fmt: skip
    assert shown.data["examples"]["changed"] == ["u00"]
    assert [r for r in env.batch.requests if r.method != "GET"] == []
    assert len(env.batch.members("dry")) == 40
    assert state.read_bytes() == before  # nothing journalled


def test_migrate_dry_run_then_for_real(env: EmulatorServer, tmp_path: Path) -> None:
    made = cli("--json", "audiences", "create", "src", "-p", "dexatel", "--channel", "SMS").data
    env.dexatel.seed_contacts(made["id"], ({"number": f"+1555{i:07d}"} for i in range(120)))
    state = str(tmp_path / "s.sqlite3")
    route = ("migrate", "--from", "dexatel:src", "--to", "batch:dst", "--create",
             "--state", state)  # fmt: skip
    dry = cli(*route, "--dry-run", "--json")
    assert (dry.code, dry.data["dry_run"], dry.data["sent"]) == (0, True, 120)
    assert dry.data["added"] == 120
    assert dry.data["examples"]["added"] == [f"+1555{i:07d}" for i in range(10)]
    text = cli(*route, "--dry-run")
    assert "would add 120: +15550000000, +15550000001," in text.stdout
    assert "would remove 0" in text.stdout
    assert "nothing was sent" in text.stdout
    assert [r for r in env.batch.requests if r.method != "GET"] == []
    report = cli(*route)
    assert report.code == 0, report.stderr
    assert "verified identical: yes" in report.stdout
    assert len(env.batch.members("dst")) == 120


def test_an_interrupted_migration_is_named_in_the_command_lines_words(
    env: EmulatorServer, tmp_path: Path
) -> None:
    from audiencekit.state import StateStore

    made = cli("--json", "audiences", "create", "src", "-p", "dexatel", "--channel", "SMS").data
    env.dexatel.seed_contacts(made["id"], ({"number": f"+1555{i:07d}"} for i in range(5)))
    state = tmp_path / "s.sqlite3"
    route = ("migrate", "--from", "dexatel:src", "--to", "batch:dst", "--create",
             "--state", str(state), "--json")  # fmt: skip
    nothing = cli(*route, "--resume")
    assert (nothing.code, nothing.error["type"]) == (2, "CheckpointError")
    assert "nothing to resume" in nothing.error["message"]

    with StateStore(state) as store:  # what a run killed after its first step leaves
        store.save_checkpoint(f"migrate:dexatel:{made['id']}->batch:dst", {"target": "dst"})
    refused = cli(*route)
    assert refused.code == 2
    assert "add --resume to continue it, or --restart to start over" in refused.error["message"]
    assert "StateStore" not in refused.stderr
    assert updates(env) == []
    restarted = cli(*route, "--restart")
    assert (restarted.code, restarted.data["verified"]) == (0, True), restarted.stderr


# -- exit codes, and errors in one line -------------------------------------------------------


def test_usage_errors_exit_2_with_one_line(env: EmulatorServer) -> None:
    unknown = cli("audiences", "explode", "--provider", "batch")
    assert unknown.code == 2
    assert unknown.stderr.strip() == (
        "audiencekit: No such command 'explode'. (see 'audiencekit audiences --help')"
    )
    as_json = cli("audiences", "list", "--provider", "dexatle", "--json")
    assert as_json.code == 2
    assert as_json.error["type"] == "BadParameter"
    assert "'dexatle' is not one of 'dexatel', 'batch'" in as_json.error["message"]
    missing = cli("members", "add", "--provider", "batch", "--audience", "x")
    assert missing.code == 2  # no FILE: an error, not a wait on standard input
    assert "Missing argument 'FILE'" in missing.stderr
    endpoint = cli("migrate", "--from", "dexatel", "--to", "batch:x")
    assert (endpoint.code, "expected PROVIDER:AUDIENCE" in endpoint.stderr) == (2, True)


def test_provider_failures_exit_1_and_credentials_2_without_a_secret(
    env: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = cli("--json", "audiences", "show", "nope", "--provider", "batch")
    assert (absent.code, absent.error["type"]) == (1, "NotFoundError")
    assert "no audience with the id or name 'nope'" in absent.error["message"]
    monkeypatch.setenv("BATCH_API_KEY", "wrong-key")
    denied = cli("audiences", "list", "--provider", "batch")
    assert denied.code == 1
    assert "check the API key" in denied.stderr
    monkeypatch.delenv("BATCH_API_KEY")
    unset = cli("audiences", "list", "--provider", "batch", "--json")
    assert (unset.code, unset.error["type"]) == (2, "ConfigurationError")
    assert "BATCH_API_KEY" in unset.error["message"]
    assert env.endpoints.batch_key not in absent.stderr + denied.stderr + unset.stderr


def test_a_partial_failure_exits_3_and_says_why(env: EmulatorServer, tmp_path: Path) -> None:
    cli("audiences", "create", "codes", "--provider", "dexatel", "--channel", "SMS")
    env.dexatel.set_faults(FaultPlan([Fault.http_status(400, "POST */contacts")]))
    numbers = [f"+1555000000{i}" for i in range(5)]
    good = tmp_path / "good.csv"
    good.write_text("number\n" + "\n".join(numbers) + "\n")
    shown = cli("members", "add", str(good), "--provider", "dexatel", "--audience", "codes")
    assert shown.code == 3
    failed = [line for line in shown.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1, shown.stdout  # one cause, its count, and a few of its ids
    assert failed[0].startswith("failed 5: dexatel answered 400")
    assert failed[0].endswith(", ...)")
    as_json = cli("--json", "members", "add", str(good), "-p", "dexatel", "-a", "codes")
    assert as_json.code == 3
    (cause,) = as_json.data["causes"]
    assert (cause["outcome"], cause["count"], len(cause["examples"])) == ("failed", 5, 3)
    assert sorted(as_json.data["failed"]) == numbers


# -- files are checked whole before anything is sent --------------------------------------------


BAD_FILES: dict[str, tuple[str, bytes, str]] = {
    "latin-1": ("m.csv", "id,city\nu1,Paris\nu2,Zürich\n".encode("latin-1"),
                "line 3: not UTF-8 (byte 0xfc at column 5)"),
    "huge field": ("m.csv", b"id,note\nu1," + b"x" * 140_000 + b"\n",
                   "line 2: not CSV: field larger than field limit"),
    "extra column": ("m.csv", b"id,plan\nu1,gold\nu2,gold,extra\n",
                     "line 3: 3 fields, but the header has 2"),
    "no id column": ("m.csv", b"user,plan\nu1,gold\n", "the header needs an 'id'"),
    "attributes not an object": ("m.jsonl", b'{"id": "u1"}\n{"id": "u2", "attributes": [1]}\n',
                                 'line 2: "attributes" must be an object, got list'),
    "not JSON": ("m.jsonl", b'{"id": "u1"}\n{"id": \n', "line 2: not JSON"),
    "bad id": ("m.jsonl", b'{"id": "u1"}\n{"id": 7}\n', "line 2: an id must be a string"),
    "bad attribute": ("m.jsonl", b'{"id": "u1", "attributes": {"a b": 1}}\n', "line 1: id 'u1'"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_is_refused_with_its_line_and_nothing_is_sent(
    env: EmulatorServer, tmp_path: Path, case: str
) -> None:
    name, content, expected = BAD_FILES[case]
    file = tmp_path / name
    file.write_bytes(content)
    env.batch.requests.clear()
    run = cli("members", "add", str(file), "-p", "batch", "-a", "files", "--json")
    assert run.code == 2
    assert run.error["type"] == "BadFileError"
    assert expected in run.error["message"]
    assert run.error["problems"], run.error
    assert env.batch.requests == []  # not even the audience was looked up (it does not exist)


def test_three_bad_rows_in_3003_send_nothing(env: EmulatorServer, tmp_path: Path) -> None:
    """The bad rows are at the end: a streamed send would have sent the first chunks."""
    rows = [f"u{i},gold" for i in range(3_000)] + [",gold", "  ,gold", "x,gold,more"]
    file = tmp_path / "big.csv"
    file.write_text("id,plan\n" + "\n".join(rows) + "\n")
    env.batch.requests.clear()
    run = cli("members", "add", str(file), "-p", "batch", "-a", "big")
    assert run.code == 2
    assert run.stderr.startswith(f"audiencekit: {file}: 3 bad row(s); nothing was sent")
    assert "line 3002: id '': an id must not be empty or blank" in run.stderr
    assert "line 3003: id '  '" in run.stderr
    assert "line 3004: 3 fields, but the header has 2" in run.stderr
    assert env.batch.requests == []


@pytest.mark.parametrize(
    ("target", "said"),
    [("missing.csv", "no such file"), (".", "is a directory"), ("locked.csv", "cannot be read")],
)
def test_a_missing_unreadable_file_or_a_directory_is_one_line(
    env: EmulatorServer, tmp_path: Path, target: str, said: str
) -> None:
    locked = tmp_path / "locked.csv"
    locked.write_text("id\nu1\n")
    locked.chmod(0)
    if target == "locked.csv" and os.access(locked, os.R_OK):
        pytest.skip("this user reads any file (root)")
    run = cli("members", "add", str(tmp_path / target), "-p", "batch", "-a", "x")
    assert run.code == 2
    assert len(run.stderr.strip().splitlines()) == 1
    assert said in run.stderr


def test_standard_input_is_never_read_from_a_terminal(
    env: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from audiencekit.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    assert main(["members", "add", "-", "-p", "batch", "-a", "x"]) == 2
    assert "reading members from the terminal" in capsys.readouterr().err
    assert env.batch.requests == []


# -- interrupts, pipes, completion, help ------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_resume_command_which_then_finishes(
    env: EmulatorServer, tmp_path: Path
) -> None:
    made = cli("--json", "audiences", "create", "src", "-p", "dexatel", "--channel", "SMS").data
    env.dexatel.seed_contacts(made["id"], ({"number": f"+1555{i:07d}"} for i in range(30_000)))
    env.batch.set_faults(FaultPlan([Fault.slow(0.5, "POST */update")]))
    state = tmp_path / "s.sqlite3"
    child_env = {**os.environ, **_variables(env), "XDG_DATA_HOME": str(tmp_path)}
    argv = [str(SCRIPT), "migrate", "--from", "dexatel:src", "--to", "batch:dst", "--create",
            "--state", str(state)]  # fmt: skip
    child = subprocess.Popen(argv, env=child_env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not updates(env) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert updates(env), "the migration never started writing"
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    hint = stderr.strip().splitlines()[-1]
    assert re.search(
        r"^audiencekit: interrupted after [\d,]+ id\(s\) were applied; "
        r"to continue, run: audiencekit migrate",
        hint,
    ), hint
    command = shlex.split(hint.split("run: ", 1)[1])
    assert command[-1] == "--resume"

    env.batch.set_faults(FaultPlan())
    resumed = subprocess.run([str(SCRIPT), "--json", *command[1:]], env=child_env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["verified"] is True
    assert len(env.batch.members("dst")) == 30_000


def test_a_reader_that_leaves_early_gets_no_traceback(env: EmulatorServer) -> None:
    """``audiencekit --json ... | head``: stdout's reader is gone before the output is."""
    code = (
        "import os, sys\n"
        "read, write = os.pipe(); os.close(read); os.dup2(write, 1)\n"
        "from audiencekit.cli import main\n"
        "sys.exit(main(['--json', 'providers']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == ""


def test_shell_completion_and_help(env: EmulatorServer) -> None:
    script = cli("completion", "bash")
    assert script.code == 0
    assert "_AUDIENCEKIT_COMPLETE=bash_complete" in script.stdout
    helped = cli("--help")
    assert "130  interrupted" in helped.stdout
    assert "143  stopped by SIGTERM" in helped.stdout
    assert "DEXATEL_API_KEY" in helped.stdout
    listed = cli("providers", "--json")
    assert {p["name"] for p in listed.data} >= {"dexatel", "batch"}
    emulator = cli("emulator", "--help")
    assert emulator.code == 0
    assert emulator.stdout.startswith("Usage: audiencekit emulator [OPTIONS]")


def test_the_progress_bar_shows_the_total_the_rate_and_the_time_left() -> None:
    from rich.console import Console

    from audiencekit.cli._output import Output

    out = Output(as_json=False)
    out.err = Console(file=io.StringIO(), force_terminal=True, width=120)
    with out.progress("add vip", 3_003) as progress:
        for chunk in range(3):
            progress(_done(chunk, 1_000))
            time.sleep(0.05)
    shown = out.err.file.getvalue()  # type: ignore[attr-defined]
    last = shown.rsplit("\r", 1)[-1]
    assert "add vip" in last
    assert "3000/3003" in last
    assert re.search(r"[\d,]+ ids/s", last), last
    assert re.search(r"\d:\d\d:\d\d", last)


def _done(chunk: int, size: int) -> Any:
    from audiencekit.progress import ChunkDone

    fields = {f.name: 0 for f in attrs.fields(ChunkDone) if f.default is attrs.NOTHING}
    fields.update(chunk=chunk, size=size, applied=size)
    return ChunkDone(**fields)


def test_python_dash_m_audiencekit_runs_the_command_line() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "audiencekit", "--version"], capture_output=True, text=True
    )
    assert (version.returncode, version.stdout.strip()) == (0, f"audiencekit {__version__}")
    helped = subprocess.run(
        [sys.executable, "-m", "audiencekit", "emulator", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: audiencekit emulator [OPTIONS]")


def test_the_state_store_defaults_to_the_users_data_directory(
    env: EmulatorServer, tmp_path: Path
) -> None:
    """Not a shared file in the temporary directory: the user's own, shown in --help."""
    expected = tmp_path / "data" / "audiencekit" / "state.sqlite3"
    helped = cli("migrate", "--help")
    assert str(expected) in "".join(helped.stdout.split())  # wrapped by the help formatter
    made = cli("audiences", "create", "defaults", "-p", "dexatel", "--channel", "SMS", "--json")
    members = tmp_path / "m.csv"
    members.write_text("number\n+15550000001\n+15550000002\n", encoding="utf-8")
    run = cli("members", "sync", str(members), "-p", "dexatel", "-a", "defaults", "--json")
    assert (run.code, run.data["applied"]) == (0, 2)
    assert expected.is_file()
    contacts = [
        c["number"]
        for account in env.dexatel.snapshot().values()
        for a in account["audiences"]
        if a["id"] == made.data["id"]
        for c in a["contacts"]
    ]
    assert sorted(contacts) == ["+15550000001", "+15550000002"]


# -- the demo --------------------------------------------------------------------------------


@pytest.mark.usefixtures("batch_unpaced")
def test_the_demo_verifies_its_summary() -> None:
    run = cli("demo", "--contacts", "600", "--json")
    assert run.code == 0
    summary = run.data
    assert summary["verified"] is True
    assert summary["dexatel_contacts"] == summary["batch_members"] == 600
    assert summary["faults_survived"] > 0


@pytest.mark.slow
def test_the_installed_command_runs_the_full_demo() -> None:
    """What the README's first command runs: the console script, 20,000 contacts."""
    done = subprocess.run(
        [str(SCRIPT), "--json", "demo"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["verified"] is True
    assert summary["batch_members"] == 20_000


# -- the state store -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sync", "migrate"])
def test_a_state_url_is_a_usage_error_that_hides_the_password_and_makes_nothing(
    env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A URL of no store this version opens is refused before any file, folder or request."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    members = tmp_path / "m.csv"
    members.write_text("id\nu1\n")
    url = "mysql://user:S3cretPassw0rd@db.example:5432/audiences"
    args = {
        "sync": ("members", "sync", str(members), "-p", "batch", "-a", "x"),
        "migrate": ("migrate", "--from", "dexatel:src", "--to", "batch:dst"),
    }[command]
    for extra in ((), ("--json",)):
        run = cli(*args, "--state", url, *extra)
        assert run.code == 2, run.stderr
        assert "S3cretPassw0rd" not in run.stdout + run.stderr
        assert "mysql://user:***@db.example:5432/audiences" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "work"]
    assert list(work.iterdir()) == []
    assert env.batch.requests == env.dexatel.requests == []


def test_a_state_store_that_cannot_be_used_is_one_line_and_exit_6(
    env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("audiences", "create", "stored", "-p", "dexatel", "--channel", "SMS")
    members = tmp_path / "m.csv"
    members.write_text("number\n+15550000001\n")
    broken = tmp_path / "s.sqlite3"
    broken.write_bytes(bytes(range(256)) * 16)
    args = ("members", "sync", str(members), "-p", "dexatel", "-a", "stored",
            "--state", str(broken))  # fmt: skip
    env.dexatel.requests.clear()
    shown = cli(*args)
    assert shown.code == 6
    assert shown.stderr.strip() == (
        f"audiencekit: the state store {broken} cannot be used: it is not a SQLite database"
    )
    as_json = cli(*args, "--json")
    assert (as_json.code, as_json.error["type"]) == (6, "StateStoreCorruptError")
    assert as_json.error["location"] == str(broken)
    assert as_json.error["reason"] == "it is not a SQLite database"
    assert broken.read_bytes() == bytes(range(256)) * 16
    assert [r for r in env.dexatel.requests if r.method != "GET"] == []
    assert "  6  the state store cannot be used" in cli("--help").stdout


def test_the_command_line_runs_from_a_thread_that_is_not_the_main_one(env: EmulatorServer) -> None:
    """Signal handlers can be set in the main thread only: elsewhere, none is set."""
    import threading

    from audiencekit.cli import main

    codes: list[int] = []
    worker = threading.Thread(
        target=lambda: codes.append(main(["audiences", "list", "-p", "dexatel"]))
    )
    worker.start()
    worker.join(60)
    assert codes == [0]


def test_a_postgresql_state_that_cannot_be_reached_is_one_line_without_its_password(
    env: EmulatorServer, tmp_path: Path
) -> None:
    members = tmp_path / "m.csv"
    members.write_text("id\nu1\n")
    url = "postgresql://worker:S3cretPassw0rd@127.0.0.1:1/audiences"  # nothing listens there
    for extra in ((), ("--json",)):
        run = cli("members", "sync", str(members), "-p", "batch", "-a", "x", "--state", url,
                  *extra)  # fmt: skip
        assert run.code == 6, run.stderr
        assert "S3cretPassw0rd" not in run.stdout + run.stderr
        assert "postgresql://worker:***@127.0.0.1:1/audiences" in run.stderr
        assert "Traceback" not in run.stderr
    assert [r for r in env.batch.requests if r.method != "GET"] == []
