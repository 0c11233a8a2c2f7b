"""A run of sync, migrate or the writer in a process of its own, for the crash tests to kill.

``python crash_child.py MODE STATE_FILE ROUND`` with the emulators' endpoints in the
environment. It prints a line at every step the parent may kill it after (``step``), and
``done`` at the end; it exits 3 when another run holds the audience's lease.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from audiencekit import AudienceBusyError, AudienceWriter, Member
from audiencekit.options import PollPolicy
from audiencekit.progress import ProgressEvent
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.providers.dexatel.wire import next_page_token
from audiencekit.state import SqliteStateStore, scope_of
from audiencekit.workflows import migrate, sync

#: Small chunks: many steps to be killed between.
CHUNK = 500
MEMBERS = 4_000


def desired(round_: int) -> list[Member]:
    """What a sync of round ``round_`` wants: a window that moves, attributes that change."""
    start = round_ * 700
    return [Member(f"user-{i}", attributes={"round": round_ % 2, "n": i})
            for i in range(start, start + MEMBERS)]  # fmt: skip


def writes() -> list[tuple[str, int]]:
    """What the writer does: adds, then removes every seventh."""
    return [("add", i) for i in range(MEMBERS)] + [("remove", i) for i in range(0, MEMBERS, 7)]


def next_token(page: dict[str, Any]) -> str | None:
    """The next page token of a Dexatel list answer (the parent reads the source with it)."""
    return next_page_token(((page.get("pagination") or {}).get("links") or {}).get("next"))


def step(what: str) -> None:
    print(f"step {what}", flush=True)


def progress(event: ProgressEvent) -> None:
    step(type(event).__name__)


async def main(mode: str, path: str, round_: int) -> int:
    env = os.environ
    batch = BatchBackend(
        api_key=env["BATCH_API_KEY"],
        project_key=env["BATCH_PROJECT_KEY"],
        base_url=env["BATCH_BASE_URL"],
        rate_limit=None,
        chunk_size=CHUNK,
        poll=PollPolicy(max_wait=30, interval=0.02, backoff=1.0),
    )
    dexatel = DexatelBackend(
        api_key=env["DEXATEL_API_KEY"], base_url=env["DEXATEL_BASE_URL"], concurrency=16
    )
    step("start")
    try:
        async with batch, dexatel:
            with SqliteStateStore(path) as state:
                if mode == "sync":
                    await sync(batch, "crash", desired(round_), create=True, state=state,
                               on_progress=progress)  # fmt: skip
                elif mode == "migrate":
                    run = f"migrate:{scope_of(dexatel)}:src->{scope_of(batch)}:dst{round_}"
                    resume = state.checkpoint(run) is not None
                    await migrate(dexatel, "src", batch, f"dst{round_}", create=True,
                                  state=state, resume=resume, on_progress=progress)  # fmt: skip
                else:
                    if not [a async for a in batch.list_audiences() if a.id == "written"]:
                        await batch.create_audience("written")
                    async with AudienceWriter(batch, "written", state=state, max_batch=CHUNK,
                                              max_delay=0.01) as writer:  # fmt: skip
                        for action, i in writes():
                            if action == "add":
                                await writer.add(Member(f"w-{i}", attributes={"n": i}))
                            else:
                                await writer.remove(f"w-{i}")
                            if i % 250 == 0:
                                step(f"{action} {i}")
    except AudienceBusyError as exc:
        print(f"busy {exc}", flush=True)
        return 3
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3])))
