"""Test without credentials: local emulators of both providers, a fake backend, a contract suite.

The emulators need the ``emulator`` extra (``pip install "audiencekit[emulator]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._clock import InstantClock
from ._faults import Fault, FaultKind, FaultPlan, Timing

if TYPE_CHECKING:
    from ._app import LoggedRequest
    from ._batch import BatchConfig, BatchEmulator
    from ._dexatel import DexatelConfig, DexatelEmulator
    from ._server import EmulatorServer, Endpoints
    from .fake import FakeBackend

__all__ = [
    "BatchConfig",
    "BatchEmulator",
    "DexatelConfig",
    "DexatelEmulator",
    "EmulatorServer",
    "Endpoints",
    "FakeBackend",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "InstantClock",
    "LoggedRequest",
    "Timing",
]

# The emulators import Starlette and uvicorn: load them only when asked for, so that
# ``audiencekit.testing.FakeBackend`` works without the emulator extra.
_LAZY = {
    "LoggedRequest": "._app",
    "BatchConfig": "._batch",
    "BatchEmulator": "._batch",
    "DexatelConfig": "._dexatel",
    "DexatelEmulator": "._dexatel",
    "EmulatorServer": "._server",
    "Endpoints": "._server",
    "FakeBackend": ".fake",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
