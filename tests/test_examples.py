"""Every example runs, as a user would run it, against the local emulators."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def run(script: str, cwd: Path, *args: str, keys: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEXATEL_", "BATCH_"))}
    if keys:  # a shell with real-looking keys and no base URLs
        env.update(DEXATEL_API_KEY="dx-live", BATCH_API_KEY="b-live", BATCH_PROJECT_KEY="p-live")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_service_writer(tmp_path: Path) -> None:
    out = run("service_writer.py", tmp_path)
    # 11,000 events; a remove that meets its add in the writer's buffer collapses with it, and
    # how many do depends on timing: between none (11,000 changes) and all 1,000 (10,000).
    changes = re.search(r"([\d,]+) changes in \d+ bulk calls", out)
    assert changes is not None, out
    assert 10_000 <= int(changes[1].replace(",", "")) <= 11_000
    assert "the audience holds 9,000 members" in out


def test_the_migration_script(tmp_path: Path) -> None:
    out = run("migrate_dexatel_to_batch.py", tmp_path)
    assert "Batch holds 1,500 (verified: True)" in out
    assert (tmp_path / "migration-state.sqlite3").exists()


def test_the_campaign_example(tmp_path: Path) -> None:
    """Keys alone never send an example to the real providers: the base URLs decide."""
    out = run("schedule_campaign.py", tmp_path, keys=True)
    assert "(no DEXATEL_BASE_URL/BATCH_BASE_URL: local emulators at http://127.0.0.1:" in out
    assert "'Flash sale': completed, 25 delivered" in out
    assert "moved it to" in out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("[!_]*.py")))
def test_every_example_is_tested(script: str) -> None:
    tested = Path(__file__).read_text(encoding="utf-8")
    assert f'"{script}"' in tested
