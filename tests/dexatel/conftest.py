from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.testing import EmulatorServer, InstantClock

MakeBackend = Callable[..., DexatelBackend]


@pytest.fixture
def emulators(audiencekit_emulators: EmulatorServer) -> EmulatorServer:
    return audiencekit_emulators


@pytest.fixture
async def make_backend(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[MakeBackend]:
    """Backends on the loopback emulator whose retry waits cost no real time."""
    made: list[DexatelBackend] = []
    ends = emulators.endpoints

    def make(**options: object) -> DexatelBackend:
        settings: dict[str, object] = {
            "api_key": ends.dexatel_key,
            "base_url": ends.dexatel_url,
            "sleep": audiencekit_clock.sleep,
            "clock": audiencekit_clock,
        }
        settings.update(options)
        backend = DexatelBackend(**settings)  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


@pytest.fixture
async def backend(make_backend: MakeBackend) -> DexatelBackend:
    return make_backend()
