"""The provider registry: a backend by name, imported only when asked for."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..backend import AudienceBackend
from ..errors import ConfigurationError

__all__ = ["open_backend", "provider_names"]

_REGISTRY = {
    "batch": "audiencekit.providers.batch:BatchBackend",
    "dexatel": "audiencekit.providers.dexatel:DexatelBackend",
    "fake": "audiencekit.testing.fake:FakeBackend",
}


def provider_names() -> list[str]:
    """The names :func:`open_backend` knows."""
    return sorted(_REGISTRY)


def open_backend(provider: str, /, **options: Any) -> AudienceBackend:
    """The backend of ``provider`` built with ``options`` (see that backend's constructor)."""
    target = _REGISTRY.get(provider)
    if target is None:
        raise ConfigurationError(f"no provider {provider!r}; known: {', '.join(provider_names())}")
    module, _, name = target.partition(":")
    backend: AudienceBackend = getattr(import_module(module), name)(**options)
    return backend
