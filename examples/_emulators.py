"""For the examples: real credentials from the environment, or local emulators when there are none.

With DEXATEL_API_KEY / BATCH_API_KEY + BATCH_PROJECT_KEY set, the examples talk to the real
providers; without them they start both emulators on 127.0.0.1 and point at those.
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
        yield {"dexatel": {}, "batch": {}}  # the backends read the environment themselves
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
