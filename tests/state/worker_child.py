"""A worker in a process of its own: one sync of the audience ``shared`` (Batch) against a
PostgreSQL state store, for test_many_workers_pg to start several of at once, kill or pause.

``python worker_child.py URL ROUND [--host NAME] [--lease-ttl SECONDS] [--pause-after N]
[--pause-in-write N]`` with the emulators' endpoints in the environment. ``--host`` makes it a
worker of another host (its lease owner names that host); ``--lease-ttl`` opens
``PostgresStateStore(url, lease_ttl=...)`` instead of ``StateStore.open(url)``;
``--pause-after`` stops the process (SIGSTOP, from itself) after its n-th chunk, between two
store calls, until SIGCONT; ``--pause-in-write`` stops it inside its n-th journal write that
writes entries (in the transaction, once the fence was checked).

It prints, one per line:

- ``ready``, once imported and connected; it then waits for a line on stdin, so that the parent
  can start many at once;
- ``owner HOST:PID``, how its lease owner begins;
- ``step N`` after each chunk is done, and ``paused`` just before it stops itself;
- ``update T0 T1`` for each update request: when it was handed to httpx and when its answer
  came (``time.time()``, the clock the emulator logs requests by);
- ``done``, ``busy HOLDER`` (exit 3) or ``fenced ERROR_TYPE`` (exit 4).
"""

from __future__ import annotations

import argparse
import socket
import sys

ARGS = argparse.ArgumentParser()
ARGS.add_argument("url")
ARGS.add_argument("round", type=int)
ARGS.add_argument("--host")
ARGS.add_argument("--lease-ttl", type=float)
ARGS.add_argument("--pause-after", type=int)
ARGS.add_argument("--pause-in-write", type=int)

if __name__ == "__main__":
    _host = ARGS.parse_args().host
    if _host is not None:  # before audiencekit is imported: it names the host in lease owners
        socket.gethostname = lambda: _host

import functools  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402

from audiencekit import AudienceBusyError, Member  # noqa: E402
from audiencekit.errors import FencingError  # noqa: E402
from audiencekit.options import PollPolicy  # noqa: E402
from audiencekit.progress import ChunkDone, ProgressEvent  # noqa: E402
from audiencekit.providers.batch import BatchBackend  # noqa: E402
from audiencekit.state import StateStore  # noqa: E402
from audiencekit.state.base import lease_owner  # noqa: E402
from audiencekit.state.postgres import PostgresStateStore  # noqa: E402
from audiencekit.workflows import sync  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])

AUDIENCE = "shared"
CHUNK = 1_000
MEMBERS = 30_000


def desired(round_: int) -> list[Member]:
    """What a worker of round ``round_`` wants: a window that moves, attributes that change."""
    start = round_ * 7_000
    return [Member(f"user-{i}", attributes={"round": round_, "n": i})
            for i in range(start, start + MEMBERS)]  # fmt: skip


def _one_call_at_a_time(method: F) -> F:
    @functools.wraps(method)
    def call(self: PausableStore, *args: Any, **kwargs: Any) -> Any:
        with self.calls:
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


def stop() -> None:
    print("paused", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


class PausableStore(PostgresStateStore):
    """A PostgreSQL store whose :meth:`pause` stops the process between two calls that write
    (none is left with a transaction open, so no row of the store stays locked), and that
    stops it inside its ``pause_in_write``-th write of entries."""

    calls = threading.Lock()
    pause_in_write: int | None = None
    writes = 0

    def pause(self) -> None:
        with self.calls:
            stop()

    def _upsert(self, *args: Any) -> None:
        self.writes += 1
        if self.writes == self.pause_in_write:
            stop()
        super()._upsert(*args)


for _name in ("intend", "accept", "mark", "record", "acquire_lease", "renew_lease",
              "release_lease"):  # fmt: skip
    setattr(PausableStore, _name, _one_call_at_a_time(getattr(PostgresStateStore, _name)))


def http_client() -> httpx.AsyncClient:
    """A client that prints when each update request goes out and when its answer comes."""
    sent: dict[int, float] = {}

    async def on_request(request: httpx.Request) -> None:
        sent[id(request)] = time.time()

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/update"):
            print(f"update {sent.pop(id(response.request))} {time.time()}", flush=True)

    return httpx.AsyncClient(
        timeout=30, event_hooks={"request": [on_request], "response": [on_response]}
    )


async def main(args: argparse.Namespace) -> int:
    env = os.environ
    state: StateStore = (
        StateStore.open(args.url)
        if args.lease_ttl is None
        else PausableStore(args.url, lease_ttl=args.lease_ttl)
    )
    if isinstance(state, PausableStore):
        state.pause_in_write = args.pause_in_write
    chunks = 0

    def progress(event: ProgressEvent) -> None:
        nonlocal chunks
        if isinstance(event, ChunkDone):
            chunks += 1
            print(f"step {chunks}", flush=True)
            if chunks == args.pause_after and isinstance(state, PausableStore):
                state.pause()

    async with (
        http_client() as client,
        BatchBackend(
            api_key=env["BATCH_API_KEY"],
            project_key=env["BATCH_PROJECT_KEY"],
            base_url=env["BATCH_BASE_URL"],
            http_client=client,
            rate_limit=None,
            concurrency=1,
            chunk_size=CHUNK,
            poll=PollPolicy(max_wait=30, interval=0.02, backoff=1.0),
        ) as batch,
    ):
        with state:
            print("ready", flush=True)
            sys.stdin.readline()
            print(f"owner {lease_owner('').rstrip(':')}", flush=True)
            try:
                await sync(batch, AUDIENCE, desired(args.round), state=state,
                           on_progress=progress)  # fmt: skip
            except FencingError as exc:  # a subclass of AudienceBusyError: caught first
                print(f"fenced {type(exc).__name__}", flush=True)
                return 4
            except AudienceBusyError as exc:
                print(f"busy {exc.holder}", flush=True)
                return 3
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, ARGS.parse_args()))
