"""The types a user program sees: mypy --strict passes a correct program and catches misuse."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_overloads

import pytest

from audiencekit import BatchBackend, DexatelBackend
from audiencekit.providers import open_backend

HERE = Path(__file__).parent


def mypy(*files: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "cache"), *map(str, files)],
        capture_output=True, text=True, cwd=HERE, timeout=600,
    )  # fmt: skip


def test_a_user_program_passes_and_misuse_fails_mypy_strict(tmp_path: Path) -> None:
    done = mypy(HERE / "user_program.py", HERE / "misuse.py", tmp_path=tmp_path)
    reported = {
        (Path(m[0]).name, int(m[1]), m[2])
        for m in re.findall(r"^(.+?):(\d+): error: .*\[([\w-]+)\]$", done.stdout, re.MULTILINE)
    }
    lines = (HERE / "misuse.py").read_text().splitlines()
    expected = {
        ("misuse.py", number, marked.group(1))
        for number, line in enumerate(lines, 1)
        if (marked := re.search(r"# E: ([\w-]+)", line))
    }
    assert len(expected) == 5
    assert reported == expected, done.stdout


@pytest.mark.parametrize(
    ("name", "backend"), [("dexatel", DexatelBackend), ("batch", BatchBackend)]
)
def test_open_backends_overloads_name_every_constructor_keyword(name: str, backend: Any) -> None:
    """The overloads repeat the backends' keywords: here is the check that they agree."""
    constructor = inspect.signature(backend.__init__).parameters
    wanted = {k: p.annotation for k, p in constructor.items() if k != "self"}
    (overload,) = [
        o for o in get_overloads(open_backend)
        if f"'{name}'" in str(inspect.signature(o).parameters["provider"].annotation)
    ]  # fmt: skip
    given = {k: p.annotation for k, p in inspect.signature(overload).parameters.items()}
    given.pop("provider")
    assert given == wanted
    assert inspect.signature(overload).return_annotation == backend.__name__
