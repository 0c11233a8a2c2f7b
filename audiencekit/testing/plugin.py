"""pytest fixtures for code that uses audiencekit (loaded automatically once it is installed).

- ``audiencekit_server``: every registered provider's emulator on loopback, one server for the
  whole session;
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
    """An emulator of every registered provider that has one, on 127.0.0.1, shared by the
    session (reset it yourself, or use ``audiencekit_emulators``)."""
    from ._server import EmulatorServer

    with EmulatorServer() as server:
        yield server
        server.reset()


@pytest.fixture
def audiencekit_emulators(audiencekit_server: EmulatorServer) -> EmulatorServer:
    """The session's emulators, empty and in their default configuration: no state, no logged
    requests, no faults; and no rate budget learned from them by an earlier test."""
    from ..core.rate import forget_governors

    audiencekit_server.reset()
    forget_governors()
    return audiencekit_server


@pytest.fixture
def audiencekit_fake() -> FakeBackend:
    """A fresh in-memory backend."""
    from .fake import FakeBackend

    return FakeBackend()


@pytest.fixture
def audiencekit_clock() -> InstantClock:
    """A clock whose sleeps return at once: pass ``clock.sleep`` and ``clock`` to audiencekit."""
    return InstantClock()
