"""Peak memory of the client while streaming N operations to the Batch emulator.

Run: ``.venv/bin/python -m benchmarks.batch_memory 100000 1000000``. Each N runs in a fresh
process (so peaks do not mix) against an emulator in another process; prints peak RSS per N and
the growth between the smallest and the largest.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import anyio

from audiencekit import Add, Member
from audiencekit.options import PollPolicy
from audiencekit.providers.batch import BatchBackend

from ._emulator import emulator_process


def operations(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield Add(Member(f"user-{i:09d}", attributes={"n": i}))


async def stream(n: int, url: str, key: str, project: str) -> None:
    async with BatchBackend(
        api_key=key, project_key=project, base_url=url, poll=PollPolicy(max_wait=600, interval=0.05)
    ) as backend:
        await backend.create_audience("memory")
        start = time.perf_counter()
        result = await backend.apply("memory", operations(n))
        assert result.applied == n, result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} {peak:.1f} {time.perf_counter() - start:.2f}")


def main(sizes: list[int]) -> None:
    peaks = {}
    for n in sizes:
        with emulator_process() as ends:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.batch_memory", "--child", str(n),
                 ends.batch_url, ends.batch_key, ends.batch_project],
                check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
        peaks[n] = float(out[1])
        print(f"{n:>10,} operations: peak RSS {peaks[n]:7.1f} MB, {float(out[2]):6.2f} s")
    low, high = min(sizes), max(sizes)
    print(f"growth {low:,} -> {high:,}: {peaks[high] - peaks[low]:+.1f} MB")


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        n, url, key, project = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        anyio.run(stream, n, url, key, project)
    else:
        main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000])
