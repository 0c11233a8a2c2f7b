from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from audiencekit import PollPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.testing import EmulatorServer, InstantClock

MakeBackend = Callable[..., BatchBackend]


@pytest.fixture
def emulators(audiencekit_emulators: EmulatorServer) -> EmulatorServer:
    audiencekit_emulators.batch.config.index_polls = 1  # every write needs one view to apply
    return audiencekit_emulators


@pytest.fixture
async def make_backend(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[MakeBackend]:
    """Backends on the loopback emulator whose waits cost no real time."""
    made: list[BatchBackend] = []
    ends = emulators.endpoints

    def make(**options: object) -> BatchBackend:
        settings: dict[str, object] = {
            "api_key": ends.batch_key,
            "project_key": ends.batch_project,
            "base_url": ends.batch_url,
            "sleep": audiencekit_clock.sleep,
            "clock": audiencekit_clock,
            "poll": PollPolicy(max_wait=60, interval=0.5),
        }
        settings.update(options)
        backend = BatchBackend(**settings)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> BatchBackend:
    return make_backend()
