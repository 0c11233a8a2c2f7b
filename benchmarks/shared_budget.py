"""Processes of one host on one Batch credential: ``run_processes`` starts them, each running
``python -m benchmarks.shared_budget URL API_KEY PROJECT AUDIENCE FIRST N`` (its ``n`` adds with
``open_backend("batch", ...)``, default settings), and counts what the emulator saw.

Each child imports everything, says it is ready, and starts when told: the wall time is that of
the adds alone, from the moment every process may send, so that it compares with the least time
the rate limit allows (two requests, an update and a view, per 10,000 ids). ``postgres_server``
starts a PostgreSQL server for children that share their budget there, as on several hosts.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from audiencekit.testing._postgres import PostgresServer, ServerUnavailable

#: The least requests ``n`` ids take: one update and one view per 10,000.
IDS_PER_UPDATE = 10_000


def least_requests(processes: int, ids: int) -> int:
    return processes * 2 * math.ceil(ids / IDS_PER_UPDATE)


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """The URL of a throwaway PostgreSQL server until the block ends; None, with the reason
    printed, when none can be started."""
    try:
        server = PostgresServer()
    except ServerUnavailable as exc:
        print(f"skipped: the rows in PostgreSQL ({exc})", flush=True)
        yield None
        return
    try:
        yield server.url
    finally:
        server.stop()


def run_processes(
    url: str,
    api_key: str,
    project_key: str,
    *,
    processes: int,
    ids: int,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``processes`` children adding ``ids`` ids each to one audience of the Batch emulator at
    ``url`` (emptied first); ``env``: their environment. Returns the wall time, the children's
    own counts, the emulator's (requests refused with 429, accepted) and the ids it lacks."""
    httpx.post(f"{url}/_emulator/reset").raise_for_status()
    audience = "shared"
    httpx.post(
        f"{url}/2.3/audiences/create",
        json={"name": audience, "type": "custom_ids"},
        headers={"Authorization": f"Bearer {api_key}", "X-Batch-Project": project_key},
    ).raise_for_status()
    time.sleep(1.0)  # the emulator's bucket (1/s, no burst) refills after that create
    command = [sys.executable, "-m", "benchmarks.shared_budget", url, api_key, project_key]
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    root = Path(__file__).parents[1]  # where ``benchmarks`` is a package
    children = [
        subprocess.Popen([*command, audience, str(i * ids), str(ids)], cwd=root, env=env, **pipes)
        for i in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline() != "ready\n":
                raise SystemExit("a child process failed to start")
        start = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=900)[0] for child in children]
        wall = time.perf_counter() - start
    finally:
        for child in children:
            child.kill()
    if any(child.returncode for child in children):
        raise SystemExit("a child process failed")
    counts = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    log = httpx.get(f"{url}/_emulator/requests", timeout=60).json()
    calls = [r for r in log if r["path"].endswith(("/update", "/view"))]
    state = httpx.get(f"{url}/_emulator/state", timeout=60).json()
    stored = state.get(project_key, {}).get(audience, {}).get("nb_ids", 0)
    return {
        "wall": wall,
        "applied": sum(c["applied"] for c in counts),
        "failed": sum(c["failed"] for c in counts),
        "refused_429": sum(1 for r in calls if r["status"] == 429),
        "accepted": sum(1 for r in calls if r["status"] < 400),
        "lost": processes * ids - stored,
    }


async def child(url: str, api_key: str, project_key: str, audience: str, first: int, n: int) -> Any:
    """Add ids ``first`` .. ``first + n`` as a user's program would (default settings)."""
    from audiencekit import Add, Member
    from audiencekit.providers import open_backend

    adds = (Add(Member(f"user-{i:09d}")) for i in range(first, first + n))
    async with open_backend("batch", api_key=api_key, project_key=project_key, base_url=url) as b:
        result = await b.apply(audience, adds, raise_on_failure=False)
    failed = len(result.failed) + len(result.unknown) + result.pending_count
    return {"applied": result.applied, "failed": failed}


if __name__ == "__main__":
    import anyio

    import audiencekit.providers.batch  # noqa: F401  (imported before the start, not timed)

    url, api_key, project_key, audience, first, n = sys.argv[1:]
    print("ready", flush=True)
    sys.stdin.readline()
    counts = anyio.run(child, url, api_key, project_key, audience, int(first), int(n))
    print(json.dumps(counts), flush=True)
