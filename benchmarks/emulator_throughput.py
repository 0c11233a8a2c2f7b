"""How fast the emulators answer, so that no benchmark of the client measures the emulator.

Run: ``.venv/bin/python -m benchmarks.emulator_throughput``. Prints 10,000-id Batch updates per
second and small Dexatel requests per second, each from 8 concurrent connections over loopback.
"""

from __future__ import annotations

import json
import time

import anyio
import httpx

from audiencekit.testing import Endpoints

from ._emulator import emulator_process

CONCURRENCY = 8


async def batch_updates(ends: Endpoints, count: int) -> float:
    headers = {
        "Authorization": f"Bearer {ends.batch_key}",
        "X-Batch-Project": ends.batch_project,
        "Content-Type": "application/json",
    }
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=f"{ends.batch_url}/2.3", headers=headers,
                                 limits=limits, timeout=60) as client:  # fmt: skip
        await client.post("/audiences/create", json={"name": "bench", "type": "custom_ids"})
        bodies = [
            json.dumps(
                {
                    "name": "bench",
                    "ids": [
                        {"action": "add", "id": f"user-{n}-{i}", "attributes": {"n": i}}
                        for i in range(10_000)
                    ],
                }
            ).encode()
            for n in range(count)
        ]
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            limiter = anyio.Semaphore(CONCURRENCY)

            async def send(body: bytes) -> None:
                async with limiter:
                    response = await client.post("/audiences/update", content=body)
                    response.raise_for_status()

            for body in bodies:
                tg.start_soon(send, body)
        return count / (time.perf_counter() - start)


async def dexatel_requests(ends: Endpoints, count: int) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    headers = {"X-Dexatel-Key": ends.dexatel_key}
    async with httpx.AsyncClient(
        base_url=ends.dexatel_url, limits=limits, headers=headers
    ) as client:
        created = await client.post("/audiences", json={"data": {"name": "b", "channel": "SMS"}})
        path = f"/audiences/{created.json()['data']['id']}/contacts"
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            limiter = anyio.Semaphore(CONCURRENCY)

            async def send(i: int) -> None:
                async with limiter:
                    response = await client.post(path, json={"data": {"number": f"+1555{i:07d}"}})
                    response.raise_for_status()

            for i in range(count):
                tg.start_soon(send, i)
        return count / (time.perf_counter() - start)


async def main() -> None:
    with emulator_process() as ends:
        updates = await batch_updates(ends, 40)
        small = await dexatel_requests(ends, 3000)
    print(f"batch    {updates:8.1f} updates/s of 10,000 ids ({updates * 10_000:,.0f} ids/s)")
    print(f"dexatel  {small:8.1f} contact creates/s")


if __name__ == "__main__":
    anyio.run(main)
