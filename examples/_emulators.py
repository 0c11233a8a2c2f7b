"""For the examples: real credentials from the environment, or local emulators when there are none.

With DEXATEL_API_KEY / BATCH_API_KEY + BATCH_PROJECT_KEY set, the examples talk to the hosts
DEXATEL_BASE_URL / BATCH_BASE_URL name (an emulator, say), else to the real providers, and print
which; without keys they start both emulators on 127.0.0.1 and point at those.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def providers() -> Iterator[dict[str, dict[str, Any]]]:
    """Keyword arguments for DexatelBackend and BatchBackend."""
    if os.environ.get("DEXATEL_API_KEY") and os.environ.get("BATCH_API_KEY"):
        # The backends read the keys and the base URLs (DEXATEL_BASE_URL, BATCH_BASE_URL) from
        # the environment themselves: say where that is before anything is sent.
        dexatel = os.environ.get("DEXATEL_BASE_URL") or "https://api.dexatel.com/v1 (real)"
        batch = os.environ.get("BATCH_BASE_URL") or "https://api.batch.com (real)"
        print(f"(credentials found: Dexatel at {dexatel}, Batch at {batch})")
        yield {"dexatel": {}, "batch": {}}
        return
    from audiencekit.testing import EmulatorServer

    with EmulatorServer() as server:
        server.batch.config.index_delay = 0.1  # Batch indexes each write asynchronously
        ends = server.endpoints
        print(f"(no credentials: using local emulators at {ends.dexatel_url} and {ends.batch_url})")
        yield {
            "dexatel": {"api_key": ends.dexatel_key, "base_url": ends.dexatel_url},
            "batch": {
                "api_key": ends.batch_key,
                "project_key": ends.batch_project,
                "base_url": ends.batch_url,
            },
        }
