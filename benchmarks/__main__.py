"""Run every benchmark and print one table: ``.venv/bin/python -m benchmarks [--scale 0.1]``.

Each row compares audiencekit with a baseline measured in the same run, against the same
loopback emulator, each in a process of its own (CPU time and peak memory are per process):

- Batch, 1,000,000 adds, the emulator indexing each write in 200 ms. Baseline A: the sequential
  script a user would write. Baseline B, the floor: the same payloads posted with raw httpx at
  the same concurrency, no polling. Targets: wall >= 3x faster than A; CPU <= 1.5x B.
- Batch under a rate limit: 1,000,000 adds against an emulator that answers 429 (no Retry-After)
  past 10 requests/s, the client's ceiling set to that rate (Batch's reported 1/s, scaled).
  Targets: no id lost, 429s <= 5% of accepted requests, views <= 1.5 per update, wall <= 1.15x
  the least time the limit allows (one update and one view per 10,000 ids).
- Processes sharing one Batch credential at its 1 request/s (the emulator's limit, no burst):
  3 and 8 processes adding 20,000 ids each with default settings, 3 with the shared budget
  off, and 3 sharing it through PostgreSQL (a throwaway server, as on several hosts; skipped,
  with the reason, when none can be started). Targets (shared): wall <= 1.25x the least time
  the limit allows, 429s <= 10% of accepted requests, no id lost.
- Memory: peak RSS streaming 500,000 vs 5,000,000 operations. Target: growth <= 20 MB.
- Dexatel: reading 100,000 contacts (vs a plain page loop), adding 5,000 under a rate limit
  (vs sequential creates at the same rate).
- The state store: a sync of 200,000 Batch members with a SQLite store vs a plain apply of the
  same members: the wall time, and the longest the event loop is held (a 5 ms ticker).
  Target: the journal never holds the loop longer than the bulk engine itself does.
- Sync at scale: a first sync of 1,000,000 and 3,000,000 Batch members (SQLite store), then a
  resync with 1% changed and 1% removed, against a process making the same members and syncing
  nothing. Targets: peak RSS <= 150 MB above it for both; the resync <= 0.3x the first's time.
- ``import audiencekit`` vs ``import httpx``.

``--scale`` shrinks every size (0.1 for a quick look); ``--only NAME`` runs one group and
``--skip NAME`` leaves one out;
``--repeat N`` runs audiencekit, the floor and the typed input N times each (default 3) and
shows the best of each, since CPU time on a shared machine varies by 15% from run to run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import httpx

from ._emulator import emulator_process
from .shared_budget import least_requests, postgres_server, run_processes


def run_scenario(
    name: str,
    ends: dict[str, Any],
    n: int,
    setup: Callable[[dict[str, Any]], None] | None = None,
    *,
    reset: bool = True,
) -> dict[str, Any]:
    """Reset both emulators (unless told not to), run ``setup`` (seeding, say), run the
    scenario in a fresh process, and count the requests the emulators received."""
    dexatel_root = ends["dexatel"]["url"].rsplit("/v1", 1)[0]
    for url in (dexatel_root, ends["batch"]["url"]) if reset else ():
        httpx.post(f"{url}/_emulator/reset").raise_for_status()
    if setup is not None:
        setup(ends)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scenarios", name, json.dumps(ends), str(n)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    log = httpx.get(f"{ends['batch']['url']}/_emulator/requests", timeout=60).json()
    writes = [r for r in log if r["path"].endswith(("/update", "/view"))]
    measured["update_calls"] = sum(1 for r in writes if r["path"].endswith("/update"))
    measured["view_calls"] = sum(1 for r in writes if r["path"].endswith("/view"))
    measured["refused_429"] = sum(1 for r in writes if r["status"] == 429)
    measured["updates_accepted"] = sum(
        1 for r in writes if r["path"].endswith("/update") and r["status"] == 202
    )
    measured["views_answered"] = sum(
        1 for r in writes if r["path"].endswith("/view") and r["status"] == 200
    )
    log = httpx.get(f"{dexatel_root}/_emulator/requests", timeout=60).json()
    measured["contact_requests"] = sum(1 for r in log if "/contacts" in r["path"])
    return measured


def endpoints(ends: Any) -> dict[str, Any]:
    return {
        "dexatel": {"url": ends.dexatel_url, "key": ends.dexatel_key},
        "batch": {"url": ends.batch_url, "key": ends.batch_key, "project": ends.batch_project},
    }


Row = tuple[str, float, float, str]


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each timing and memory figure at its lowest over the runs (what noise did not add to), as
    timeit does; counts must agree between runs."""
    best = dict(runs[0])
    for key, value in best.items():
        if isinstance(value, float):
            best[key] = min(run[key] for run in runs)
        else:
            assert all(run[key] == value for run in runs), key
    return best


BATCH_COMPARED = (
    "batch_audiencekit",
    "batch_raw_floor",
    "batch_typed_input",
    "batch_floor_payloads",
    "batch_ids",
    "batch_raw_floor_ids",
)


def batch_rows(n: int, repeat: int) -> list[Row]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BATCH_COMPARED}
    with emulator_process("--index-delay", "0.2") as ends:
        e = endpoints(ends)
        # Interleaved (ours, the floor, the typed input, ...; again), so that the machine's
        # speed, which drifts over a minute on a shared host, weighs on each alike.
        for _ in range(repeat):
            for name in BATCH_COMPARED:
                runs[name].append(run_scenario(name, e, n))
        seq = run_scenario("batch_sequential", e, n)  # 30 s of waiting: once is enough
    ours, floor, typed, payloads, ids, floor_ids = (best_of(runs[name]) for name in BATCH_COMPARED)
    assert ours["applied"] == ids["applied"] == n
    # audiencekit's own work: its CPU less the caller's objects (the typed input) less what
    # posting costs (the floor, whose HTTP is audiencekit's too). The floor's CPU also holds
    # building and encoding its payloads (stdlib json), work audiencekit does its own way (and
    # counts as its own): without it, only the floor's HTTP is taken off.
    own = ours["cpu"] - typed["cpu"] - floor["cpu"]
    own_http = ours["cpu"] - typed["cpu"] - (floor["cpu"] - payloads["cpu"])
    return [
        ("batch update calls", ours["update_calls"], seq["update_calls"], "A"),
        ("batch view calls", ours["view_calls"], seq["view_calls"], "A"),
        ("batch wall s (vs A, sequential)", ours["wall"], seq["wall"], "A"),
        ("batch wall s (vs B, raw floor)", ours["wall"], floor["wall"], "B"),
        ("batch client CPU s (vs B)", ours["cpu"], floor["cpu"], "B"),
        # What any typed API costs before sending a byte: the Add(Member(...)) objects alone.
        ("batch CPU s, typed input alone (<= 0.3x B)", typed["cpu"], floor["cpu"], "B"),
        ("batch CPU s, own work (<= 0.2x B)", own, floor["cpu"], "B"),
        ("batch CPU s, own work less B's HTTP only", own_http, floor["cpu"], "B"),
        ("batch CPU s, B's payloads alone", payloads["cpu"], floor["cpu"], "B"),
        ("batch CPU s, str ids (<= 1.2x B ids)", ids["cpu"], floor_ids["cpu"], "B ids"),
        ("batch CPU s, str ids (vs B)", ids["cpu"], floor["cpu"], "B"),
        ("batch wall s, str ids (vs B ids)", ids["wall"], floor_ids["wall"], "B ids"),
        ("batch peak RSS MB (vs B)", ours["rss_mb"], floor["rss_mb"], "B"),
    ]


def rate_limited_rows(n: int, rate: float) -> list[Row]:
    """Batch under its reported limit, scaled: the emulator refuses (429, no Retry-After) past
    ``rate`` requests a second; the least time that allows is one update and one view per
    10,000 ids at that rate."""
    with emulator_process("--batch-rate-limit", f"{rate:g}") as ends:
        e = endpoints(ends)
        e["batch"]["rate_limit"] = rate
        ours = run_scenario("batch_rate_limited", e, n)
    updates, views = ours["updates_accepted"], ours["views_answered"]
    least = 2 * math.ceil(n / 10_000) / rate
    label = f"batch {n:,} adds at {rate:g} req/s"
    return [
        (f"{label}: ids not applied (target 0)", ours["failed"], 0, "-"),
        (f"{label}: 429s / accepted (<= 0.05)", ours["refused_429"], updates + views, "accepted"),
        (f"{label}: views / updates (<= 1.5)", views, updates, "updates"),
        (f"{label}: wall s (<= 1.15x)", ours["wall"], least, "limit"),
    ]


def shared_budget_rows(ids: int) -> list[Row]:
    """Processes on one Batch credential at 1 request/s: the least time is two requests per
    10,000 ids of every process. Through the host's file, then through a throwaway PostgreSQL
    server, as processes on several hosts would share it (skipped when none can be started)."""
    rows: list[Row] = []
    with emulator_process("--batch-rate-limit", "1") as ends, postgres_server() as url:
        settings = [(3, None, ""), (8, None, ""), (3, "off", ", budget off")]
        if url is not None:
            settings.append((3, url, ", in PostgreSQL"))
        for processes, setting, named in settings:
            env = dict(os.environ, **({"AUDIENCEKIT_SHARED_BUDGET": setting} if setting else {}))
            ours = run_processes(
                ends.batch_url, ends.batch_key, ends.batch_project,
                processes=processes, ids=ids, env=env,
            )  # fmt: skip
            label = f"{processes} procs x {ids:,} at 1/s{named}"
            rows += [
                (f"{label}: ids lost (target 0)", ours["lost"] + ours["failed"], 0, "-"),
                (f"{label}: 429s / accepted (<= 0.10)", ours["refused_429"], ours["accepted"],
                 "accepted"),
                (f"{label}: wall s (<= 1.25x)", ours["wall"], least_requests(processes, ids),
                 "limit"),
            ]  # fmt: skip
    return rows


def memory_rows(small: int, large: int) -> list[Row]:
    with emulator_process() as ends:
        e = endpoints(ends)
        low = run_scenario("batch_audiencekit", e, small)
        high = run_scenario("batch_audiencekit", e, large)
    return [(f"peak RSS MB, {large:,} vs {small:,} ops", high["rss_mb"], low["rss_mb"], "self")]


def dexatel_rows(read: int, add: int) -> list[Row]:
    contacts = [{"number": f"+1555{i:07d}", "first_name": f"n{i}"} for i in range(read)]

    def seed(ends: dict[str, Any]) -> None:
        root = ends["dexatel"]["url"]
        made = httpx.post(
            f"{root}/audiences",
            headers={"X-Dexatel-Key": ends["dexatel"]["key"]},
            json={"data": {"name": "read", "channel": "SMS"}},
        ).json()["data"]
        httpx.post(
            f"{root.rsplit('/v1', 1)[0]}/_emulator/seed",
            json={"audience_id": made["id"], "contacts": contacts},
            timeout=120,
        ).raise_for_status()
        ends["extra"] = json.dumps([made["id"]])

    with emulator_process() as ends:
        e = endpoints(ends)
        ours = run_scenario("dexatel_read_audiencekit", e, read, seed)
        loop = run_scenario("dexatel_read_loop", e, read, seed)
        assert ours["read"] == loop["read"] == read
        adds = run_scenario("dexatel_add_audiencekit", e, add)
        sequential = run_scenario("dexatel_add_sequential", e, add)
    return [
        (f"dexatel read {read:,}: list requests", ours["contact_requests"],
         loop["contact_requests"], "page loop"),
        (f"dexatel read {read:,}: wall s", ours["wall"], loop["wall"], "page loop"),
        (f"dexatel add {add:,} at 200 req/s: wall s", adds["wall"], sequential["wall"],
         "sequential"),
    ]  # fmt: skip


def state_rows(n: int) -> list[Row]:
    """A sync of n Batch members with a state store against a plain apply of the same members:
    the journal's cost, and the longest the event loop is held (a ticker every 5 ms)."""
    with emulator_process() as ends:
        e = endpoints(ends)
        ours = run_scenario("state_sync", e, n)
        plain = run_scenario("state_apply", e, n)
    assert ours["applied"] == plain["applied"] == n
    return [
        (f"sync {n:,} with a state store: wall s", ours["wall"], plain["wall"], "apply"),
        (f"sync {n:,}: longest loop stall ms", ours["stall_ms"], plain["stall_ms"], "apply"),
    ]


def sync_rows(sizes: list[int]) -> list[Row]:
    """A first sync of n Batch members and a resync with 1% changed and 1% removed (SQLite
    store), each in a process of its own, against a process that makes the same members and
    syncs nothing. Targets: peak RSS <= 150 MB above that baseline for both, at every size
    (the slope shows the growth); the resync <= 0.3x the first sync's wall time."""
    rows: list[Row] = []
    for n in sizes:
        with emulator_process() as ends, tempfile.TemporaryDirectory() as folder:
            e = endpoints(ends)
            e["extra"] = f"{folder}/state.sqlite3"
            base = run_scenario("sync_baseline", e, n)
            first = run_scenario("sync_first", e, n)
            again = run_scenario("sync_resync", e, n, reset=False)
        assert first["applied"] == n, first
        assert again["sent"] == again["applied"] == 2 * (n // 100) + (n % 100 > 1), again
        rows += [
            (f"sync {n:,} first: RSS MB above baseline", first["rss_mb"] - base["rss_mb"],
             150.0, "target"),
            (f"sync {n:,} 1% resync: RSS MB above base", again["rss_mb"] - base["rss_mb"],
             150.0, "target"),
            (f"sync {n:,} 1% resync: wall s (<= 0.3x)", again["wall"], first["wall"], "first"),
        ]  # fmt: skip
    return rows


def import_rows() -> list[Row]:
    def best(module: str) -> float:
        # click is blocked: with the cli extra installed, httpx would import its own command
        # line (click, rich) and weigh more than it does for a library user.
        code = (
            "import sys; sys.modules['click'] = None; import time; t = time.perf_counter(); "
            f"import {module}; print(time.perf_counter() - t)"
        )
        command = [sys.executable, "-c", code]
        runs = [
            float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
            for _ in range(7)
        ]
        return min(runs)

    return [("import ms (audiencekit vs httpx)", best("audiencekit") * 1e3, best("httpx") * 1e3,
             "httpx")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--scale", type=float, default=1.0)
    groups = ["batch", "rate", "shared", "memory", "dexatel", "state", "sync", "import"]
    parser.add_argument("--only", choices=groups)
    parser.add_argument("--skip", choices=groups, action="append", default=[],
                        help="leave a group out (may be repeated)")  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each Batch CPU scenario; the best is shown"
    )
    args = parser.parse_args()
    scale = args.scale

    def size(n: int) -> int:
        return max(1, int(n * scale))

    def wanted(group: str) -> bool:
        return args.only in (None, group) and group not in args.skip

    # The processes of this run share their rate budgets through a file of their own, not the
    # user's (AUDIENCEKIT_SHARED_BUDGET, inherited by every scenario's process).
    folder = tempfile.TemporaryDirectory()
    os.environ.setdefault("AUDIENCEKIT_SHARED_BUDGET", f"{folder.name}/budget.sqlite3")
    rows: list[Row] = []
    if wanted("batch"):
        rows += batch_rows(size(1_000_000), args.repeat)
    if wanted("rate"):
        # 10/s rather than 20: at 20, the one-process emulator spends most of each second
        # checking 10,000-id updates, and the arrival times its limit sees jitter by tens of ms.
        rows += rate_limited_rows(size(1_000_000), 10.0)
    if wanted("shared"):
        rows += shared_budget_rows(size(20_000))
    if wanted("memory"):
        rows += memory_rows(size(500_000), size(5_000_000))
    if wanted("dexatel"):
        rows += dexatel_rows(size(100_000), size(5_000))
    if wanted("state"):
        rows += state_rows(size(200_000))
    if wanted("sync"):
        rows += sync_rows([size(1_000_000), size(3_000_000)])
    if wanted("import"):
        rows += import_rows()

    print(f"\n{'metric':<44} {'audiencekit':>12} {'baseline':>12} {'ratio':>8}  vs")
    for metric, ours, base, against in rows:
        ratio = ours / base if base else float("nan")
        print(f"{metric:<44} {ours:>12,.2f} {base:>12,.2f} {ratio:>8.2f}  {against}")
    folder.cleanup()


if __name__ == "__main__":
    main()
