"""pytest fixtures for code that uses audiencekit (loaded automatically once it is installed).

- ``audiencekit_server``: both emulators on loopback, one server for the whole session;
- ``audiencekit_emulators``: that server, reset to empty (state, request log, faults) per test;
- ``audiencekit_fake``: a fresh :class:`~audiencekit.testing.FakeBackend`;
- ``audiencekit_clock``: an :class:`~audiencekit.testing.InstantClock` (sleeps cost nothing).

Nothing heavy is imported until a fixture is used, so the plugin costs nothing to projects that
do not use it, and the emulators need the ``emulator`` extra only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ._clock import InstantClock

if TYPE_CHECKING:
    from ._server import EmulatorServer
    from .fake import FakeBackend


@pytest.fixture(scope="session")
def audiencekit_server() -> Iterator[EmulatorServer]:
    """Both emulators on 127.0.0.1, shared by the session (reset it yourself, or use
    ``audiencekit_emulators``)."""
    from ._faults import FaultPlan
    from ._server import EmulatorServer

    with EmulatorServer() as server:
        yield server
        server.dexatel.set_faults(FaultPlan())
        server.batch.set_faults(FaultPlan())


@pytest.fixture
def audiencekit_emulators(audiencekit_server: EmulatorServer) -> EmulatorServer:
    """The session's emulators, empty and in their default configuration: no state, no logged
    requests, no faults; and no rate budget learned from them by an earlier test."""
    from .._rate import forget_governors
    from ._batch import BatchConfig
    from ._dexatel import DexatelConfig
    from ._faults import FaultPlan

    server = audiencekit_server
    server.dexatel.config = DexatelConfig()
    server.batch.config = BatchConfig()
    for emulator in (server.dexatel, server.batch):
        emulator.set_faults(FaultPlan())
        emulator.log_bodies = True
        emulator.reset()
    forget_governors()
    return server


@pytest.fixture
def audiencekit_fake() -> FakeBackend:
    """A fresh in-memory backend."""
    from .fake import FakeBackend

    return FakeBackend()


@pytest.fixture
def audiencekit_clock() -> InstantClock:
    """A clock whose sleeps return at once: pass ``clock.sleep`` and ``clock`` to audiencekit."""
    return InstantClock()
