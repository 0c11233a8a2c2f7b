"""``audiencekit emulator``: its help is the command line's, and what it prints, pasted into a
shell, is all the command line needs to reach the emulators."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from audiencekit.providers import providers

from .test_cli import SCRIPT, cli

#: Every variable a registered provider reads: none may leak in from the test's environment.
READ = {variable for p in providers() for variable in p.env.values()}


@pytest.fixture
def served() -> Iterator[list[str]]:
    """A running ``audiencekit emulator``, and the lines it printed before serving."""
    clean = {k: v for k, v in os.environ.items() if k not in READ}
    child = subprocess.Popen([str(SCRIPT), "emulator", "--port", "0"], env=clean,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        if "Ctrl-C" in line:
            break
    try:
        yield lines
    finally:
        child.terminate()
        child.communicate(timeout=10)


def test_the_printed_exports_pasted_into_a_shell_reach_the_emulators(served: list[str]) -> None:
    exports = [line for line in served if line.startswith("export ")]
    assert {line.split()[1].split("=")[0] for line in exports} == {
        "DEXATEL_API_KEY", "DEXATEL_BASE_URL", "BATCH_API_KEY", "BATCH_PROJECT_KEY",
        "BATCH_BASE_URL",
    }  # fmt: skip

    def pasted(*args: str) -> Any:
        """``audiencekit --json ARGS`` in a shell given only what the emulator printed."""
        script = "\n".join([*served, shlex.join([str(SCRIPT), "--json", *args])])
        clean = {k: v for k, v in os.environ.items() if k not in READ}
        shell = subprocess.run(["bash", "-e", "-c", script], env=clean, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        return json.loads(shell.stdout)

    made = pasted("audiences", "create", "pasted", "-p", "dexatel", "--channel", "SMS")
    assert [a["id"] for a in pasted("audiences", "list", "-p", "dexatel")] == [made["id"]]
    assert pasted("audiences", "list", "-p", "batch") == []


def test_the_emulators_help_is_the_command_lines() -> None:
    helped = cli("emulator", "--help")
    assert helped.code == 0
    assert helped.stdout.startswith("Usage: audiencekit emulator [OPTIONS]")
    for option in ("--port", "--index-delay", "--batch-rate-limit", "--faults", "--json"):
        assert option in helped.stdout
    wrong = cli("emulator", "--port", "many")
    assert wrong.code == 2
    assert "'many' is not a valid integer" in wrong.stderr
