"""The registry's data: every known :class:`Provider` by name, and the entry points read once."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from ..backend import AudienceBackend
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..testing._app import EmulatorApp

__all__ = [
    "ENTRY_POINT_GROUP",
    "Provider",
    "get_provider",
    "provider_names",
    "providers",
    "register_provider",
    "unregister_provider",
]

logger = logging.getLogger("audiencekit")

#: The entry point group an installed package registers its providers in.
ENTRY_POINT_GROUP = "audiencekit.providers"


def _load(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    loaded: Callable[..., Any] = getattr(import_module(module), name)
    return loaded


def _frozen(env: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(env))


@attrs.frozen(kw_only=True)
class Provider:
    """What audiencekit needs to know of a provider.

    ``backend`` builds its :class:`~audiencekit.AudienceBackend` from keyword options: a
    callable, or ``"module:attribute"`` imported when first used. ``env`` maps options to the
    environment variables read for them when not passed (``{"api_key": "ACME_API_KEY",
    "base_url": "ACME_BASE_URL"}``). ``emulator``, when given, builds a local emulator of the
    provider (an :class:`~audiencekit.testing.EmulatorApp`), served by ``EmulatorServer``, the
    ``emulator`` command and the pytest plugin. ``hidden`` providers (test doubles) are left out
    of the command line's choices.
    """

    name: str = attrs.field()
    backend: str | Callable[..., AudienceBackend]
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    emulator: str | Callable[[], EmulatorApp] | None = None
    description: str = ""
    cli_options: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    hidden: bool = False

    @name.validator
    def _check_name(self, _: object, value: str) -> None:
        if not (isinstance(value, str) and value.isidentifier() and value.islower()):
            raise ConfigurationError(
                f"a provider name is a lowercase identifier (it names options and variables), "
                f"got {value!r}"
            )

    @cli_options.validator
    def _check_cli_options(self, _: object, value: Mapping[str, str]) -> None:
        for option in value:
            if not (option.isidentifier() and option.islower()) or option == "base_url":
                raise ConfigurationError(
                    f"cli_options names keyword options other than base_url (which has "
                    f"--{self.name.replace('_', '-')}-url), got {option!r}"
                )

    def build(self, **options: Any) -> AudienceBackend:
        """The backend, built with ``options``; an option not passed is read from its
        environment variable when set (an argument wins over the environment)."""
        for option, variable in self.env.items():
            if option not in options and os.environ.get(variable):
                options[option] = os.environ[variable]
        backend: AudienceBackend = _load(self.backend)(**options)
        return backend

    def build_emulator(self) -> EmulatorApp:
        """A fresh emulator of the provider; ConfigurationError when it has none."""
        if self.emulator is None:
            raise ConfigurationError(f"provider {self.name!r} has no emulator")
        app: EmulatorApp = _load(self.emulator)()
        return app


_BUILT_IN = (
    Provider(
        name="dexatel",
        backend="audiencekit.providers.dexatel:DexatelBackend",
        env={"api_key": "DEXATEL_API_KEY", "base_url": "DEXATEL_BASE_URL"},
        emulator="audiencekit.testing._dexatel:DexatelEmulator",
        description="Dexatel SMS, Viber and WhatsApp audiences (one request per contact)",
    ),
    Provider(
        name="batch",
        backend="audiencekit.providers.batch:BatchBackend",
        env={
            "api_key": "BATCH_API_KEY",
            "project_key": "BATCH_PROJECT_KEY",
            "base_url": "BATCH_BASE_URL",
        },
        emulator="audiencekit.testing._batch:BatchEmulator",
        description="Batch custom-id audiences (10,000 ids a call, applied later)",
        cli_options={"api_version": "Batch API version (default 2.3)."},
    ),
    Provider(
        name="fake",
        backend="audiencekit.testing.fake:FakeBackend",
        description="an in-memory backend for tests",
        hidden=True,
    ),
)

_by_name: dict[str, Provider] = {p.name: p for p in _BUILT_IN}
_entry_points_loaded = False


def register_provider(provider: Provider, *, replace: bool = False) -> Provider:
    """Add ``provider`` to the registry (and return it). A name already taken is refused
    unless ``replace``."""
    if not isinstance(provider, Provider):
        raise ConfigurationError(f"register_provider() takes a Provider, got {provider!r}")
    _load_entry_points()
    if provider.name in _by_name and not replace:
        raise ConfigurationError(f"a provider named {provider.name!r} is already registered")
    _by_name[provider.name] = provider
    return provider


def unregister_provider(name: str) -> None:
    """Remove a provider registered earlier (tests use this to clean up)."""
    _by_name.pop(name, None)


def _load_entry_points() -> None:
    """Register the providers installed packages declare, once. A broken entry point is
    logged and skipped: one bad package must not take every provider down."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = point.load()
            provider = found() if callable(found) and not isinstance(found, Provider) else found
        except Exception as exc:
            logger.warning("provider entry point %r skipped: %s", point.name, exc)
            continue
        if not isinstance(provider, Provider):
            logger.warning("provider entry point %r skipped: not a Provider", point.name)
            continue
        _by_name.setdefault(provider.name, provider)


def providers() -> Iterator[Provider]:
    """Every registered provider, built-in ones first, then in order of registration."""
    _load_entry_points()
    return iter(list(_by_name.values()))


def provider_names() -> list[str]:
    """The names :func:`open_backend` knows."""
    return sorted(p.name for p in providers())


def get_provider(name: str) -> Provider:
    """The provider registered as ``name``; ConfigurationError naming the known ones."""
    _load_entry_points()
    found = _by_name.get(name)
    if found is None:
        raise ConfigurationError(f"no provider {name!r}; known: {', '.join(provider_names())}")
    return found
