from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from audiencekit import PollPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore
from audiencekit.testing import EmulatorServer, InstantClock


@pytest.fixture
def emulators(audiencekit_emulators: EmulatorServer) -> EmulatorServer:
    audiencekit_emulators.batch.config.index_polls = 1
    return audiencekit_emulators


@pytest.fixture
async def batch(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[BatchBackend]:
    ends = emulators.endpoints
    async with BatchBackend(
        api_key=ends.batch_key,
        project_key=ends.batch_project,
        base_url=ends.batch_url,
        sleep=audiencekit_clock.sleep,
        clock=audiencekit_clock,
        poll=PollPolicy(max_wait=60, interval=0.5),
    ) as backend:
        yield backend


@pytest.fixture
async def dexatel(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[DexatelBackend]:
    ends = emulators.endpoints
    async with DexatelBackend(
        api_key=ends.dexatel_key,
        base_url=ends.dexatel_url,
        sleep=audiencekit_clock.sleep,
        clock=audiencekit_clock,
        concurrency=16,
    ) as backend:
        yield backend


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    with StateStore(tmp_path / "state.sqlite3") as store:
        yield store  # type: ignore[misc]
