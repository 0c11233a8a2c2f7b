"""The provider registry: every provider audiencekit knows, by name, imported only when used.

The built-in providers are registered here; an installed package adds its own with an entry point
in the ``audiencekit.providers`` group naming a :class:`Provider` (or a function returning one),
and a program with :func:`register_provider`. The command line, :func:`open_backend`, the
emulator server and the pytest plugin all read this registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from ..backend import AudienceBackend
from ._registry import (
    ENTRY_POINT_GROUP,
    Provider,
    get_provider,
    provider_names,
    providers,
    register_provider,
    unregister_provider,
)

if TYPE_CHECKING:
    import random

    import httpx

    from ..core.clock import Clock, Sleep
    from ..core.poll import PollPolicy
    from ..core.transport import RetryPolicy
    from .batch import BatchBackend, BatchClient
    from .dexatel import DexatelBackend, DexatelClient

__all__ = [
    "ENTRY_POINT_GROUP",
    "Provider",
    "get_provider",
    "open_backend",
    "provider_names",
    "providers",
    "register_provider",
    "unregister_provider",
]


# The built-in providers' overloads give a type checker the precise backend and its keyword
# arguments (a misspelt name or option is an error); they repeat the constructors' keywords,
# and tests/typing checks that they match. A provider registered by a package is built with
# get_provider(name).build(**options).
@overload
def open_backend(
    provider: Literal["dexatel"],
    /,
    *,
    client: DexatelClient | None = ...,
    api_key: str | None = ...,
    base_url: str | None = ...,
    http_client: httpx.AsyncClient | None = ...,
    timeout: httpx.Timeout | float | None = ...,
    retry: RetryPolicy | None = ...,
    rate_limit: float | None = ...,
    concurrency: int = ...,
    chunk_size: int = ...,
    sleep: Sleep | None = ...,
    clock: Clock | None = ...,
    rng: random.Random | None = ...,
) -> DexatelBackend: ...


@overload
def open_backend(
    provider: Literal["batch"],
    /,
    *,
    client: BatchClient | None = ...,
    api_key: str | None = ...,
    project_key: str | None = ...,
    base_url: str | None = ...,
    api_version: str = ...,
    http_client: httpx.AsyncClient | None = ...,
    timeout: httpx.Timeout | float | None = ...,
    retry: RetryPolicy | None = ...,
    rate_limit: float | None = ...,
    poll: PollPolicy = ...,
    concurrency: int = ...,
    chunk_size: int = ...,
    sleep: Sleep | None = ...,
    clock: Clock | None = ...,
    rng: random.Random | None = ...,
) -> BatchBackend: ...


def open_backend(provider: str, /, **options: Any) -> AudienceBackend:
    """The backend of ``provider`` built with ``options`` (see that backend's constructor);
    options not passed come from the provider's environment variables when set. Type checkers
    know the built-in names (``"dexatel"``, ``"batch"``); any registered name works."""
    return get_provider(provider).build(**options)
