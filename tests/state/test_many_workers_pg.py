"""Many workers, one audience, one PostgreSQL store: worker processes (some of another host)
started at once, killed or paused mid-sync (two store clients in one process, on either store:
tests/workflows/test_many_workers.py). Exactly one
writes at a time, a dead holder's lease is taken over after its time, a worker paused past its
lease writes and sends nothing more, and the provider ends holding exactly the last wanted set.

Batch cannot list members: the store's journal is the only memory. Its emulator here applies
writes by time (as the real service does), so what a dead worker had accepted gets applied.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from audiencekit.errors import FencingError
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import fingerprint
from audiencekit.state.postgres import PostgresStateStore
from audiencekit.testing import EmulatorServer

from ..support import batch_scope
from . import worker_child
from .test_postgres import lease_expiry, wait_for_database_clock

CHILD = str(Path(worker_child.__file__))
AUDIENCE = worker_child.AUDIENCE


@pytest.fixture
def shared(server: EmulatorServer) -> str:
    """The audience every worker syncs, created (the workers do not create it)."""

    async def create() -> None:
        async with BatchBackend(**server.endpoints["batch"].options, rate_limit=None) as batch:
            await batch.create_audience(AUDIENCE)

    anyio.run(create)
    return AUDIENCE


@attrs.define
class Worker:
    """A worker process (see worker_child.py) and what it printed."""

    process: subprocess.Popen[str]
    lines: list[str] = attrs.field(factory=list)

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def read_until(self, prefix: str) -> str | None:
        """Read lines until one starts with ``prefix`` (returned); None at the end."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())
            if line.startswith(prefix):
                return line.strip()
        return None

    def finish(self) -> str:
        """Read to the end and wait: "done", "busy" or "fenced" (what it last printed)."""
        self.read_until("\0")
        self.process.wait(60)
        outcome = self.lines[-1].split()[0] if self.lines else ""
        expected = {"done": 0, "busy": 3, "fenced": 4}.get(outcome)
        assert self.process.returncode == expected, self.errors()
        return outcome

    def errors(self) -> str:
        assert self.process.stderr is not None
        return f"{self.lines[-5:]} {self.process.stderr.read()[-3000:]}"

    def said(self, prefix: str) -> list[str]:
        """The words after ``prefix`` of each line that starts with it."""
        return [line.removeprefix(prefix).strip() for line in self.lines if line.startswith(prefix)]

    @property
    def owner(self) -> str:
        """How its lease owner begins: host:pid."""
        return self.said("owner")[0]

    @property
    def updates(self) -> list[tuple[float, float]]:
        """When each of its update requests went out and when the answer came."""
        return [(float(a), float(b)) for a, b in (w.split() for w in self.said("update"))]


Start = Callable[..., Worker]


@pytest.fixture
def start(postgres_url: str, env: dict[str, str]) -> Iterator[Start]:
    """``start(round_, *options)``: a worker process, ready (imported and connected) and
    waiting to be let go; any still running at the end is killed."""
    started: list[Worker] = []

    def start(round_: int, *options: str) -> Worker:
        process = subprocess.Popen(
            [sys.executable, CHILD, postgres_url, str(round_), *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        worker = Worker(process)
        started.append(worker)
        assert worker.read_until("ready") == "ready", worker.errors()
        return worker

    yield start
    for worker in started:
        with worker.process:  # closes its pipes
            if worker.process.poll() is None:
                worker.process.kill()


def go_together(workers: Sequence[Worker]) -> list[str]:
    """Let every worker run at once; what each ended with."""
    for worker in workers:
        worker.go()
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        return list(pool.map(Worker.finish, workers))


def updates_logged(server: EmulatorServer) -> list[float]:
    """When the emulator answered each update request, in the order they came."""
    return [r.at for r in server.batch.requests if r.path.endswith("/update")]


def wanted(round_: int) -> dict[str, dict[str, Any]]:
    return {m.id: dict(m.attributes) for m in worker_child.desired(round_)}


def assert_exact(server: EmulatorServer, url: str, members: dict[str, dict[str, Any]]) -> None:
    """The provider holds exactly ``members``, and the journal knows it: all settled."""
    server.batch.apply_pending()  # what Batch accepted from a dead process, it applies
    assert server.batch.members(AUDIENCE) == members
    with PostgresStateStore(url) as store:
        entries = store.entries(batch_scope(server), AUDIENCE)
        assert store.pushed(batch_scope(server), AUDIENCE) == {
            k: fingerprint(v) for k, v in members.items()
        }
    assert all(entry.settled for entry in entries.values())


def wait_for_the_lease_to_run_out(url: str, server: EmulatorServer) -> None:
    """Wait until the audience's lease has run out, by the database's clock."""
    key = f"{batch_scope(server)}:{AUDIENCE}"
    wait_for_database_clock(url, lease_expiry(url, key))


# -- worker processes ---------------------------------------------------------------------------


def test_workers_started_at_once_write_one_at_a_time_and_end_exact(
    postgres_url: str, start: Start, server: EmulatorServer, shared: str
) -> None:
    workers = [start(1) for _ in range(4)]
    outcomes = go_together(workers)
    # Usually one worker writes and three are refused; one that starts after the writer is
    # done may also end "done" (sending what the journal says is still missing: nothing).
    assert set(outcomes) <= {"done", "busy"}
    assert "done" in outcomes
    writers = {w.owner for w, outcome in zip(workers, outcomes, strict=True) if outcome == "done"}
    for worker, outcome in zip(workers, outcomes, strict=True):
        if outcome == "busy":
            holder = worker.said("busy")[0]
            assert holder.rsplit(":", 1)[0] in writers  # refused by a worker that wrote
            assert worker.updates == []
    # Each update the emulator answered was in flight from exactly one worker, and once a
    # second worker sent one, the first never sent another: their writes did not interleave.
    senders: list[int] = []
    for at in updates_logged(server):
        sending = [i for i, w in enumerate(workers) if any(a < at < b for a, b in w.updates)]
        assert len(sending) == 1, (at, sending)
        senders.append(sending[0])
    runs = [s for i, s in enumerate(senders) if i == 0 or senders[i - 1] != s]
    assert len(runs) == len(set(runs)), runs
    assert sorted(senders) == sorted(i for i, w in enumerate(workers) for _ in w.updates)
    assert len(senders) >= worker_child.MEMBERS // worker_child.CHUNK
    assert_exact(server, postgres_url, wanted(1))

    second = start(2)  # another worker, another wanted set
    assert go_together([second]) == ["done"]
    assert_exact(server, postgres_url, wanted(2))


@pytest.mark.crash
def test_a_killed_holders_lease_on_another_host_is_taken_over_after_its_time(
    postgres_url: str, start: Start, server: EmulatorServer, shared: str
) -> None:
    gone = start(1, "--host", "host-b", "--lease-ttl", "2")
    refused = start(2, "--lease-ttl", "2")  # this host, ready
    gone.go()
    assert gone.read_until("step 3") == "step 3"
    gone.process.send_signal(signal.SIGKILL)
    gone.process.wait(30)
    scope = batch_scope(server)
    with PostgresStateStore(postgres_url) as store:
        left = store.entries(scope, AUDIENCE)
    assert any(not entry.settled for entry in left.values())  # it died with writes unsettled

    assert go_together([refused]) == ["busy"]  # another host's lease: not known to be dead
    assert refused.said("busy")[0].startswith(f"host-b:{gone.process.pid}:")
    assert refused.updates == []
    wait_for_the_lease_to_run_out(postgres_url, server)
    after = start(2, "--lease-ttl", "2")
    assert go_together([after]) == ["done"]
    assert_exact(server, postgres_url, wanted(2))  # what the dead one left is reconciled


def test_a_worker_paused_past_its_lease_is_fenced_and_sends_nothing_more(
    postgres_url: str, start: Start, server: EmulatorServer, shared: str
) -> None:
    paused = start(1, "--host", "host-b", "--lease-ttl", "2",
                          "--pause-after", "3")  # fmt: skip
    paused.go()
    assert paused.read_until("paused") == "paused"
    _, status = os.waitpid(paused.process.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    try:
        wait_for_the_lease_to_run_out(postgres_url, server)
        other = start(2, "--host", "host-c", "--lease-ttl", "2")
        assert go_together([other]) == ["done"]
        sent = len(updates_logged(server))
        resumed = time.time()
    finally:
        paused.process.send_signal(signal.SIGCONT)
    assert paused.finish() == "fenced"
    assert paused.said("fenced") == [FencingError.__name__]
    assert len(updates_logged(server)) == sent  # nothing more reached the provider
    assert all(sent_at < resumed for sent_at, _ in paused.updates)  # nor went out
    assert_exact(server, postgres_url, wanted(2))


def test_a_worker_paused_inside_a_journal_write_does_not_hold_the_takeover_up(
    postgres_url: str, start: Start, server: EmulatorServer, shared: str
) -> None:
    paused = start(1, "--host", "host-b", "--lease-ttl", "2", "--pause-in-write", "3")
    paused.go()
    assert paused.read_until("paused") == "paused"
    _, status = os.waitpid(paused.process.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    try:
        wait_for_the_lease_to_run_out(postgres_url, server)
        # A waiting acquire_lease gives up after 10 s here (StateStoreLockedError), not never.
        bounded = f"{postgres_url}?options=-c%20lock_timeout%3D10000"
        with PostgresStateStore(bounded) as taker:
            lease = taker.acquire_lease(f"{batch_scope(server)}:{AUDIENCE}", "host-c:1:t", 30)
        assert lease.held_by("host-c:1:t")
    finally:
        resumed = time.time()
        paused.process.send_signal(signal.SIGCONT)
    paused.read_until("\0")  # it ends (fenced, or its connection ended by the server)
    assert paused.process.wait(60) != 0
    assert all(sent_at < resumed for sent_at, _ in paused.updates)  # having sent nothing more
