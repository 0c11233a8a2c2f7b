"""Acme, registered for this package's tests, and its emulator served beside the built-in ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from audiencekit import open_backend
from audiencekit.providers import register_provider, unregister_provider
from audiencekit.testing import EmulatorServer

from .acme import ACME, AcmeBackend, AcmeEmulator


@pytest.fixture(scope="package")
def acme_server() -> Iterator[EmulatorServer]:
    """Acme registered, and an EmulatorServer started after: it serves Acme's emulator beside
    the built-in ones, with no word of Acme in audiencekit."""
    register_provider(ACME)
    try:
        with EmulatorServer() as server:
            yield server
    finally:
        unregister_provider("acme")


@pytest.fixture
def acme(acme_server: EmulatorServer) -> AcmeEmulator:
    acme_server.reset()
    emulator = acme_server.emulators["acme"]
    assert isinstance(emulator, AcmeEmulator)
    return emulator


@pytest.fixture
async def backend(acme_server: EmulatorServer, acme: AcmeEmulator) -> AsyncIterator[AcmeBackend]:
    found = open_backend("acme", **acme_server.endpoints["acme"].options)
    assert isinstance(found, AcmeBackend)
    async with found:
        yield found
