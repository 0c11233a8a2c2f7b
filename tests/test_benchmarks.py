"""The benchmark command runs end to end (at a hundredth of its sizes): it is the one command the
README's performance table comes from, so it must not rot between the times it is run in full."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_benchmarks_run_and_count_what_they_should() -> None:
    done = subprocess.run(
        # The shared-budget group starts processes at 1 request/s (a minute even this small):
        # the suite runs its scenario itself (tests/test_budget.py, tests/state/test_pg_budget.py).
        [sys.executable, "-m", "benchmarks", "--scale", "0.01", "--repeat", "2",
         "--skip", "shared"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    row = re.compile(r"^(.+?)\s+(-?[\d,.]+)\s+([\d,.]+)\s+-?[\d.]+  \S.*$", re.MULTILINE)
    rows = {
        match[1].strip(): (float(match[2].replace(",", "")), float(match[3].replace(",", "")))
        for match in row.finditer(done.stdout)
    }
    # 10,000 adds: one update call and one view each side; 1,000 contacts: 10 pages each side.
    assert rows["batch update calls"] == (1, 1)
    assert rows["batch view calls"] == (1, 1)
    assert rows["dexatel read 1,000: list requests"] == (10, 10)
    assert {
        "batch client CPU s (vs B)",
        "batch CPU s, typed input alone (<= 0.3x B)",
        "batch CPU s, str ids (<= 1.2x B ids)",
        "batch CPU s, B's payloads alone",
        "peak RSS MB, 50,000 vs 5,000 ops",
        "dexatel add 50 at 200 req/s: wall s",
        "sync 2,000 with a state store: wall s",
        "sync 2,000: longest loop stall ms",
        "sync 10,000 first: RSS MB above baseline",
        "sync 30,000 1% resync: wall s (<= 0.3x)",
        "import ms (audiencekit vs httpx)",
    } <= set(rows)
    # Every measure is positive, except a count of 429s, which may well be none at all, and
    # the own-work and RSS-above-baseline rows, differences that may come out at or below zero.
    assert all(base > 0 for _, base in rows.values())
    assert all(
        ours > 0
        for name, (ours, _) in rows.items()
        if "429s" not in name and "own work" not in name and "above" not in name
    )
