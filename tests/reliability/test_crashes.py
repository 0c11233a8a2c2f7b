"""SIGKILL at seeded random points: a child process running sync, migrate or the writer against
the emulators is killed, the run is repeated, and the provider and the state store must then
hold exactly the desired state. Two processes syncing one audience at once end exact too.

Batch here indexes writes by time (50 ms after they arrive, in arrival order), not when their
token is viewed, as the real service does: a write whose process died still gets applied.
"""

from __future__ import annotations

import concurrent.futures
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from audiencekit.state import SqliteStateStore, fingerprint
from audiencekit.testing import EmulatorServer

from ..support import batch_scope
from . import crash_child

pytestmark = pytest.mark.crash

CHILD = str(Path(crash_child.__file__))
SEED = 20261129


def run(mode: str, state: Path, round_: int, env: dict[str, str],
        kill_after: int | None = None, rng: random.Random | None = None) -> str:  # fmt: skip
    """Run the child; with ``kill_after``, SIGKILL it right after its n-th step (half the
    time a little way into the next one). Returns "killed", "done" or "busy"."""
    errors = state.with_suffix(f".{mode}.{round_}.stderr")
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, CHILD, mode, str(state), str(round_)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        ) as child,
    ):
        assert child.stdout is not None
        steps = 0
        for line in child.stdout:
            if not line.startswith("step"):
                continue
            steps += 1
            if kill_after is not None and steps >= kill_after:
                assert rng is not None
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 0.02))
                child.send_signal(signal.SIGKILL)
                child.wait(30)
                return "killed"
        child.wait(60)
    if child.returncode == 3:
        return "busy"
    assert child.returncode == 0, errors.read_text()[-3000:]
    return "done"


def settle(server: EmulatorServer) -> None:
    server.batch.apply_pending()  # what Batch accepted from a dead process, it applies


def assert_exact(server: EmulatorServer, state: Path, audience: str,
                 wanted: dict[str, dict[str, Any]]) -> None:  # fmt: skip
    settle(server)
    assert server.batch.members(audience) == wanted
    scope = batch_scope(server)
    with SqliteStateStore(state) as store:
        assert store.pushed(scope, audience) == {k: fingerprint(v) for k, v in wanted.items()}
        assert all(e.settled for e in store.entries(scope, audience).values())


def test_sync_killed_at_random_points_then_repeated_ends_exact(
    server: EmulatorServer, env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    state = tmp_path / "state.sqlite3"
    assert run("sync", state, 0, env) == "done"  # creates the audience
    for round_ in range(1, 8):
        # The killed run wants other members (round 100+ is a window far away): whatever it
        # wrote before it died must be removed by the next run, which wants round_.
        point = rng.randint(1, 25)
        assert run("sync", state, 100 + round_, env, kill_after=point, rng=rng) == "killed"
        assert run("sync", state, round_, env) == "done"
        wanted = {m.id: dict(m.attributes) for m in crash_child.desired(round_)}
        assert_exact(server, state, "crash", wanted)


def test_writer_killed_at_random_points_then_repeated_ends_exact(
    server: EmulatorServer, env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)
    state = tmp_path / "state.sqlite3"
    removed = {i for action, i in crash_child.writes() if action == "remove"}
    wanted = {f"w-{i}": {"n": i} for i in range(crash_child.MEMBERS) if i not in removed}
    for _ in range(7):
        assert run("writer", state, 0, env, kill_after=rng.randint(1, 19), rng=rng) == "killed"
        assert run("writer", state, 0, env) == "done"
        assert_exact(server, state, "written", wanted)


def dexatel_api(server: EmulatorServer) -> httpx.Client:
    ends = server.endpoints
    return httpx.Client(base_url=ends.dexatel_url, headers={"X-Dexatel-Key": ends.dexatel_key})


def source_members(api: httpx.Client, audience: str) -> dict[str, dict[str, Any]]:
    members: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        params = {"page_size": "100"} | ({"page_token": token} if token else {})
        page = api.get(f"/audiences/{audience}/contacts", params=params).json()
        for contact in page["data"]:
            members[contact["number"]] = {"first_name": contact["first_name"]}
        token = crash_child.next_token(page)
        if token is None:
            return members


def test_migrate_killed_at_random_points_with_the_source_changing_ends_exact(
    server: EmulatorServer, env: dict[str, str], tmp_path: Path
) -> None:
    rng = random.Random(SEED + 2)
    state = tmp_path / "state.sqlite3"
    with dexatel_api(server) as api:
        made = api.post("/audiences", json={"data": {"name": "src", "channel": "SMS"}})
        source = made.json()["data"]["id"]
        server.dexatel.seed_contacts(
            source, ({"number": f"+1555{i:07d}", "first_name": "a"} for i in range(3_000))
        )
        for round_ in range(7):
            assert run("migrate", state, round_, env, kill_after=rng.randint(1, 18),
                       rng=rng) == "killed"  # fmt: skip
            # While it is down, the source changes: some contacts go, some change, some come.
            contacts = api.get(f"/audiences/{source}/contacts", params={"page_size": "100"})
            for contact in contacts.json()["data"][: rng.randint(0, 20)]:
                if rng.random() < 0.5:
                    api.delete(f"/audiences/{source}/contacts/{contact['id']}")
                else:
                    api.put(f"/audiences/{source}/contacts/{contact['id']}",
                            json={"data": {"first_name": f"r{round_}"}})  # fmt: skip
            new = [{"number": f"+1666{round_:02d}{i:05d}", "first_name": "n"} for i in range(30)]
            server.dexatel.seed_contacts(source, new)
            assert run("migrate", state, round_, env) == "done"
            assert_exact(server, state, f"dst{round_}", source_members(api, source))


def test_two_processes_syncing_one_audience_end_exact(
    server: EmulatorServer, env: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite3"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(run, "sync", state, 1, env)
        second = pool.submit(run, "sync", state, 2, env)
        outcomes = sorted([first.result(), second.result()])
    assert outcomes in (["busy", "done"], ["done", "done"])
    assert run("sync", state, 2, env) == "done"
    wanted = {m.id: dict(m.attributes) for m in crash_child.desired(2)}
    assert_exact(server, state, "crash", wanted)
