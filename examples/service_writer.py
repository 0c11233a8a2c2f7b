"""A service that keeps a Batch audience in sync with its own events, through AudienceWriter.

Many request handlers call ``writer.add`` / ``writer.remove`` as users subscribe and leave; the
writer turns them into a few bulk calls, holds callers back when it cannot keep up, and raises
if anything failed. Run: ``python examples/service_writer.py``.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
from _emulators import providers

from audiencekit import AudienceWriter, BatchBackend, Member


async def handle_events(writer: AudienceWriter, worker: int, events: int) -> None:
    """Stands for a request handler: each event subscribes or unsubscribes a user."""
    rng = random.Random(worker)
    for n in range(events):
        user = f"user-{worker}-{n}"
        await writer.add(Member(user, attributes={"plan": rng.choice(["free", "pro"])}))
        if n % 10 == 9:
            await writer.remove(f"user-{worker}-{n - 5}")  # somebody left
        await anyio.lowlevel.checkpoint()


async def main() -> dict[str, int]:
    with providers() as settings:
        async with BatchBackend(**settings["batch"]) as batch:
            await batch.create_audience("service_subscribers")
            async with (
                AudienceWriter(
                    batch, "service_subscribers", max_batch=2_000, max_delay=0.2
                ) as writer,
                anyio.create_task_group() as handlers,
            ):
                for worker in range(20):
                    handlers.start_soon(handle_events, writer, worker, 500)
            audience = await batch.get_audience("service_subscribers")
    summary = {"applied": writer.applied, "bulk_calls": writer.calls, "size": audience.size or 0}
    print(f"{summary['applied']:,} changes in {summary['bulk_calls']} bulk calls; "
          f"the audience holds {summary['size']:,} members")  # fmt: skip
    return summary


if __name__ == "__main__":
    anyio.run(main)
