"""For the examples: the hosts the base URLs name, or local emulators when they name none.

The base URL decides, never the keys alone: with DEXATEL_BASE_URL and BATCH_BASE_URL set (to
an emulator, or to https://api.dexatel.com/v1 and https://api.batch.com for the real
providers), the examples talk to those hosts with the keys from the environment, and print
which; without them they start both emulators on 127.0.0.1 and point at those, whatever keys
are set (so that keys in your shell never send an example's writes to a real account).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def providers() -> Iterator[dict[str, dict[str, Any]]]:
    """Keyword arguments for DexatelBackend and BatchBackend."""
    dexatel, batch = os.environ.get("DEXATEL_BASE_URL"), os.environ.get("BATCH_BASE_URL")
    if dexatel and batch:
        # The backends read the keys and the base URLs from the environment themselves: say
        # where that is before anything is sent.
        print(f"(DEXATEL_BASE_URL and BATCH_BASE_URL set: Dexatel at {dexatel}, Batch at {batch})")
        yield {"dexatel": {}, "batch": {}}
        return
    from audiencekit.testing import EmulatorServer

    with EmulatorServer() as server:
        server.batch.config.index_delay = 0.1  # Batch indexes each write asynchronously
        ends = server.endpoints
        print(f"(no DEXATEL_BASE_URL/BATCH_BASE_URL: local emulators at {ends.dexatel_url} and "
              f"{ends.batch_url})")  # fmt: skip
        yield {
            "dexatel": {"api_key": ends.dexatel_key, "base_url": ends.dexatel_url},
            "batch": {
                "api_key": ends.batch_key,
                "project_key": ends.batch_project,
                "base_url": ends.batch_url,
            },
        }
