"""Each benchmark scenario, run alone in a child process: ``python -m benchmarks.scenarios NAME
URLS_JSON N``. It prints one JSON line: wall time, CPU time and peak RSS of this process, and
what the scenario counts. The emulators run in another process (see ``benchmarks/_emulator``).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from audiencekit import Add, Member
from audiencekit.options import PollPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend

Scenario = Callable[[dict[str, Any], int], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {}

#: Batch update calls in flight, for audiencekit and for the raw-httpx floor alike.
CONCURRENCY = 8
#: How often the hand-written baseline polls (and audiencekit's first poll).
POLL = 0.25


def scenario(func: Scenario) -> Scenario:
    SCENARIOS[func.__name__] = func
    return func


def batch_headers(ends: dict[str, Any]) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {ends['batch']['key']}",
        "X-Batch-Project": ends["batch"]["project"],
    }


def member_ids(n: int) -> Iterator[str]:
    return (f"user-{i:09d}" for i in range(n))


async def create_batch_audience(ends: dict[str, Any], name: str) -> None:
    async with httpx.AsyncClient(base_url=f"{ends['batch']['url']}/2.3") as client:
        response = await client.post(
            "/audiences/create",
            json={"name": name, "type": "custom_ids"},
            headers=batch_headers(ends),
        )
        response.raise_for_status()


# -- Batch --------------------------------------------------------------------------------------


def typed_adds(n: int) -> Iterator[Add]:
    """The input a user hands audiencekit: n typed operations, built as they are read."""
    return (Add(Member(i, attributes={"plan": "gold"})) for i in member_ids(n))


@scenario
async def batch_typed_input(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """What building that typed input costs alone: the same n operations made and dropped."""
    made = sum(1 for _ in typed_adds(n))
    await anyio.lowlevel.checkpoint()
    return {"made": made}


@scenario
async def batch_audiencekit(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """audiencekit: stream n adds from a generator, wait until all are applied. The emulator
    has no rate limit here, so neither has the client's governor (it still runs, unpaced)."""
    return await run_batch(ends, n, rate_limit=math.inf)


@scenario
async def batch_rate_limited(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """audiencekit against an emulator that refuses (429, no Retry-After) past a rate per
    project: the client's ceiling is that rate, as its default is Batch's reported 1/s."""
    return await run_batch(ends, n, rate_limit=ends["batch"]["rate_limit"])


def batch_backend(ends: dict[str, Any], *, rate_limit: float) -> BatchBackend:
    """audiencekit's Batch backend as every Batch scenario runs it."""
    return BatchBackend(
        api_key=ends["batch"]["key"],
        project_key=ends["batch"]["project"],
        base_url=ends["batch"]["url"],
        concurrency=CONCURRENCY,
        poll=PollPolicy(max_wait=600, interval=POLL),
        rate_limit=rate_limit,
    )


async def run_batch(ends: dict[str, Any], n: int, *, rate_limit: float) -> dict[str, Any]:
    await create_batch_audience(ends, "bench")
    async with batch_backend(ends, rate_limit=rate_limit) as backend:
        result = await backend.apply("bench", typed_adds(n), raise_on_failure=False)
    failed = len(result.failed) + len(result.unknown) + result.pending_count
    return {"applied": result.applied, "polls": result.polls, "chunks": result.chunks,
            "failed": failed}  # fmt: skip


@scenario
async def batch_sequential(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """Baseline A, the script a user would write: post 10,000 ids, poll until applied, next."""
    await create_batch_audience(ends, "bench")
    polls = 0
    async with httpx.AsyncClient(
        base_url=f"{ends['batch']['url']}/2.3", headers=batch_headers(ends), timeout=60
    ) as client:
        ids = member_ids(n)
        while True:
            chunk = [
                {"action": "add", "id": i, "attributes": {"plan": "gold"}}
                for _, i in zip(range(10_000), ids, strict=False)
            ]
            if not chunk:
                break
            response = await client.post("/audiences/update", json={"name": "bench", "ids": chunk})
            response.raise_for_status()
            token = response.json()["indexing_token"]
            while True:
                await anyio.sleep(POLL)
                polls += 1
                view = await client.get(
                    "/audiences/view", params={"name": "bench", "indexing_token": token}
                )
                if view.json()["indexing_state"] == "APPLIED":
                    break
    return {"applied": n, "polls": polls}


def floor_bodies(n: int, *, attributes: bool = True) -> Iterator[bytes]:
    """The floor's update bodies: chunks of 10,000 ready-made dicts, JSON-encoded (stdlib)."""
    ids = member_ids(n)
    while True:
        if attributes:
            chunk = [
                {"action": "add", "id": i, "attributes": {"plan": "gold"}}
                for _, i in zip(range(10_000), ids, strict=False)
            ]
        else:
            chunk = [{"action": "add", "id": i} for _, i in zip(range(10_000), ids, strict=False)]
        if not chunk:
            return
        yield json.dumps({"name": "bench", "ids": chunk}).encode()


async def raw_floor(ends: dict[str, Any], n: int, *, attributes: bool) -> dict[str, Any]:
    await create_batch_audience(ends, "bench")
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=f"{ends['batch']['url']}/2.3", headers=batch_headers(ends), limits=limits,
        timeout=60,
    ) as client:  # fmt: skip
        slots = anyio.Semaphore(CONCURRENCY)

        async def post(body: bytes) -> None:
            async with slots:
                response = await client.post(
                    "/audiences/update", content=body,
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                response.raise_for_status()

        async with anyio.create_task_group() as tg:
            for body in floor_bodies(n, attributes=attributes):
                await slots.acquire()  # hold back like audiencekit does: memory stays bounded
                slots.release()
                tg.start_soon(post, body)
    return {"applied": n}


@scenario
async def batch_raw_floor(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """Baseline B, the floor: the same payloads, JSON-encoded and posted with raw httpx at the
    same concurrency, with no validation, no polling, no bookkeeping."""
    return await raw_floor(ends, n, attributes=True)


@scenario
async def batch_raw_floor_ids(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """The floor for plain ids: the same, each entry an id without attributes."""
    return await raw_floor(ends, n, attributes=False)


@scenario
async def batch_floor_payloads(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """What the floor spends building and encoding its bodies alone, without posting them: the
    floor less this is its HTTP, which audiencekit spends alike."""
    size = sum(len(body) for body in floor_bodies(n))
    await anyio.lowlevel.checkpoint()
    return {"bytes": size}


@scenario
async def batch_ids(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """audiencekit's fast path: ``add_members`` with n plain str ids (no Member objects)."""
    await create_batch_audience(ends, "bench")
    async with batch_backend(ends, rate_limit=math.inf) as backend:
        result = await backend.add_members("bench", member_ids(n), raise_on_failure=False)
    failed = len(result.failed) + len(result.unknown) + result.pending_count
    return {"applied": result.applied, "polls": result.polls, "chunks": result.chunks,
            "failed": failed}  # fmt: skip


# -- Dexatel ------------------------------------------------------------------------------------


def dexatel_backend(ends: dict[str, Any], **options: Any) -> DexatelBackend:
    return DexatelBackend(api_key=ends["dexatel"]["key"], base_url=ends["dexatel"]["url"],
                          **options)  # fmt: skip


async def seeded_audience(ends: dict[str, Any], n: int) -> str:
    """An audience of n contacts, created through the API 1,000 at a time (one call each)."""
    async with dexatel_backend(ends) as backend:
        ids = []
        for start in range(0, n, 1_000):
            contacts = [{"number": f"+1555{i:07d}", "first_name": f"n{i}"}
                        for i in range(start, min(n, start + 1_000))]  # fmt: skip
            made = await backend.client.create_audience(f"seed{start}", "SMS", contacts=contacts)
            ids.append(made.id)
    return json.dumps(ids)


@scenario
async def dexatel_read_audiencekit(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """audiencekit: read every contact of the seeded audiences with ``iter_members``."""
    audiences = json.loads(ends["extra"])
    read = 0
    async with dexatel_backend(ends) as backend:
        for audience_id in audiences:
            async for _ in backend.iter_members(audience_id):
                read += 1
    return {"read": read}


@scenario
async def dexatel_read_loop(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """Baseline: a plain page-by-page loop with httpx, following links.next."""
    audiences = json.loads(ends["extra"])
    read = 0
    headers = {"X-Dexatel-Key": ends["dexatel"]["key"]}
    async with httpx.AsyncClient(base_url=ends["dexatel"]["url"], headers=headers) as client:
        for audience_id in audiences:
            params = {"page_size": "100"}
            while True:
                body = (
                    await client.get(f"/audiences/{audience_id}/contacts", params=params)
                ).json()
                read += len(body["data"])
                link = body["pagination"]["links"]["next"]
                if not link:
                    break
                params = {"page_size": "100", "page_token": httpx.URL(link).params["page_token"]}
    return {"read": read}


RATE = 200.0  # requests per second, for both the add benchmarks


@scenario
async def dexatel_add_audiencekit(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """audiencekit: add n contacts (concurrent idempotent upserts) under a rate limit."""
    async with dexatel_backend(ends, rate_limit=RATE, concurrency=8) as backend:
        audience = await backend.create_audience("adds", channel="SMS")
        result = await backend.add_members(
            audience.id, (Member(f"+1666{i:07d}", attributes={"first_name": "x"}) for i in range(n))
        )
    return {"applied": result.applied}


@scenario
async def dexatel_add_sequential(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """Baseline: one create after the other, spaced to the same rate limit."""
    headers = {"X-Dexatel-Key": ends["dexatel"]["key"]}
    async with httpx.AsyncClient(base_url=ends["dexatel"]["url"], headers=headers) as client:
        made = await client.post("/audiences", json={"data": {"name": "adds", "channel": "SMS"}})
        path = f"/audiences/{made.json()['data']['id']}/contacts"
        next_at = time.monotonic()
        for i in range(n):
            delay = next_at - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            next_at = max(next_at, time.monotonic()) + 1 / RATE
            data = {"data": {"number": f"+1666{i:07d}", "first_name": "x"}}
            (await client.post(path, json=data)).raise_for_status()
    return {"applied": n}


# -- the state store -------------------------------------------------------------------------------


async def longest_stall(stalls: list[float], tick: float = 0.005) -> None:
    """Note the longest time the event loop did not run this task past its ``tick``."""
    last = time.perf_counter()
    while True:
        await anyio.sleep(tick)
        now = time.perf_counter()
        stalls[0] = max(stalls[0], now - last - tick)
        last = now


async def batch_with_ticker(ends: dict[str, Any], n: int, *, state: bool) -> dict[str, Any]:
    """Put n members into a Batch audience, with sync and a state store or with a plain apply,
    while a task measures how long the event loop is held."""
    from audiencekit.state import SqliteStateStore
    from audiencekit.workflows import sync

    await create_batch_audience(ends, "bench")
    members = [Member(i, attributes={"plan": "gold"}) for i in member_ids(n)]
    stalls = [0.0]
    async with batch_backend(ends, rate_limit=math.inf) as backend, anyio.create_task_group() as tg:
        tg.start_soon(longest_stall, stalls)
        if state:
            with (
                tempfile.TemporaryDirectory() as folder,
                SqliteStateStore(f"{folder}/state.sqlite3") as store,
            ):
                report = await sync(backend, "bench", members, state=store)
            applied = report.result.applied
        else:
            applied = (await backend.apply("bench", [Add(m) for m in members])).applied
        tg.cancel_scope.cancel()
    return {"applied": applied, "stall_ms": stalls[0] * 1e3}


@scenario
async def state_sync(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """sync of n members with a SQLite state store (the journal, the lease)."""
    return await batch_with_ticker(ends, n, state=True)


@scenario
async def state_apply(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """The same members with a plain apply: no state store at all."""
    return await batch_with_ticker(ends, n, state=False)


# -- sync at scale: memory ------------------------------------------------------------------------


def desired(n: int, *, resync: bool) -> Iterator[Member]:
    """n members, made as they are read (the caller's list is not what is measured); for a
    resync, 1% with another plan and 1% gone."""
    for i in range(n):
        if resync and i % 100 == 1:
            continue
        plan = "silver" if resync and i % 100 == 0 else "gold"
        yield Member(f"user-{i:09d}", attributes={"plan": plan})


async def sync_run(ends: dict[str, Any], n: int, *, resync: bool) -> dict[str, Any]:
    from audiencekit.state import SqliteStateStore
    from audiencekit.workflows import sync

    if not resync:
        await create_batch_audience(ends, "scale")
    async with batch_backend(ends, rate_limit=math.inf) as backend:
        with SqliteStateStore(ends["extra"]) as store:
            report = await sync(backend, "scale", desired(n, resync=resync), state=store)
    return {"applied": report.result.applied, "sent": report.sent}


@scenario
async def sync_first(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """A first sync of n members into an empty Batch audience, with a SQLite state store."""
    return await sync_run(ends, n, resync=False)


@scenario
async def sync_resync(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """The next sync of the same audience, 1% changed and 1% removed."""
    return await sync_run(ends, n, resync=True)


@scenario
async def sync_baseline(ends: dict[str, Any], n: int) -> dict[str, Any]:
    """The same imports and the same members made and dropped, and no sync: the baseline."""
    from audiencekit.state import SqliteStateStore  # noqa: F401
    from audiencekit.workflows import sync  # noqa: F401

    async with batch_backend(ends, rate_limit=math.inf):
        return {"read": sum(1 for _ in desired(n, resync=False))}


# -- import time ----------------------------------------------------------------------------------


@scenario
async def import_nothing(ends: dict[str, Any], n: int) -> dict[str, Any]:
    return {}


def measure(name: str, ends: dict[str, Any], n: int) -> dict[str, Any]:
    start = time.perf_counter()
    cpu_start = time.process_time()
    counts = anyio.run(SCENARIOS[name], ends, n)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": time.perf_counter() - start,
        "cpu": time.process_time() - cpu_start,
        "rss_mb": usage.ru_maxrss / 1024,
        **counts,
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))))
