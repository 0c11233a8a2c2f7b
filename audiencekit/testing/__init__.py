"""Test without credentials: local emulators of the providers, a fake backend, contract suites
(:mod:`~audiencekit.testing.contract` for a backend, :mod:`~audiencekit.testing.store_contract`
for a state store).

The emulators need the ``emulator`` extra (``pip install "audiencekit[emulator]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import InstantClock
from ._faults import Fault, FaultKind, FaultPlan, Timing

if TYPE_CHECKING:
    from ._app import EmulatorApp, LoggedRequest
    from ._batch import BatchConfig, BatchEmulator
    from ._dexatel import DexatelConfig, DexatelEmulator
    from ._server import EmulatorServer, Endpoint, Endpoints
    from .fake import FakeBackend

__all__ = [
    "BatchConfig",
    "BatchEmulator",
    "DexatelConfig",
    "DexatelEmulator",
    "EmulatorApp",
    "EmulatorServer",
    "Endpoint",
    "Endpoints",
    "FakeBackend",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "InstantClock",
    "LoggedRequest",
    "ProviderError",
    "Timing",
    "json_response",
    "request_json",
]

# The emulators import Starlette and uvicorn: load them only when asked for, so that
# ``audiencekit.testing.FakeBackend`` works without the emulator extra.
_LAZY = {
    "LoggedRequest": "._app",
    "EmulatorApp": "._app",
    "ProviderError": "._app",
    "json_response": "._app",
    "request_json": "._app",
    "BatchConfig": "._batch",
    "BatchEmulator": "._batch",
    "DexatelConfig": "._dexatel",
    "DexatelEmulator": "._dexatel",
    "EmulatorServer": "._server",
    "Endpoint": "._server",
    "Endpoints": "._server",
    "FakeBackend": ".fake",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
