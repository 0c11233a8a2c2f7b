"""The options commands share, built from the provider registry when the command is built:
nothing here knows any one provider."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click

from ..models import Channel
from ..providers import Provider, providers
from ._session import Session

if TYPE_CHECKING:
    from ..state.base import StateStore

__all__ = ["Options", "common", "registered", "stacked", "state_store"]

F = TypeVar("F", bound=Callable[..., Any])


def registered() -> list[Provider]:
    """The providers a user may name: every registered one but test doubles."""
    return [p for p in providers() if not p.hidden]


def stacked(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The decorators as one, applied as if written one above the other."""

    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def common(among: Sequence[Provider]) -> Callable[[F], F]:
    """``--json`` and each provider's options (``--NAME-url``, and its ``cli_options`` as
    ``--NAME-OPTION``), accepted before or after the command's name."""

    def remember(provider: str | None, keyword: str) -> Any:
        def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
            if not value:
                return
            session: Session = ctx.obj  # App.main always passes one
            if provider is None:
                session.as_json = True
            else:
                session.options.setdefault(provider, {})[keyword] = value

        return callback

    options = [
        click.option("--json", "json_", is_flag=True, expose_value=False,
                     callback=remember(None, "json"), help="Print results (and errors) as JSON."),
    ]  # fmt: skip
    for provider in among:
        flag = provider.name.replace("_", "-")
        variable = provider.env.get("base_url")
        url_help = f"{provider.name} base URL" + (f" (or {variable})." if variable else ".")
        for keyword, metavar, help_text in [
            ("base_url", "URL", url_help),
            *((k, k.upper(), h) for k, h in provider.cli_options.items()),
        ]:
            name = "url" if keyword == "base_url" else keyword.replace("_", "-")
            options.append(
                click.option(f"--{flag}-{name}", expose_value=False, metavar=metavar,
                             callback=remember(provider.name, keyword), help=help_text)
            )  # fmt: skip
    return stacked(*options)


class _StatePath(click.Path):
    """A ``--state`` value: a file path, or a URL of a store this version can open
    (``postgresql://``); any other URL is refused before anything is opened or made, shown
    without its password."""

    name = "state"

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..core.urls import POSTGRES_SCHEMES, is_url, redacted

        if isinstance(value, str) and is_url(value):
            if value.partition("://")[0].lower() in POSTGRES_SCHEMES:
                return value
            self.fail(f"{redacted(value)} is not a state store this version can open: give "
                      "a file path, or a postgresql:// URL", param, ctx)  # fmt: skip
        return super().convert(value, param, ctx)


def _default_state() -> Path:
    """The state store's file when ``--state`` is not given: in the user's data folder, never
    a shared temporary one."""
    from ..core.paths import user_data_dir

    return user_data_dir() / "state.sqlite3"


def state_store(location: Path | str) -> StateStore:
    """The state store at ``location``: a URL's server, or a file whose folder is made when
    missing."""
    from ..state import StateStore

    if isinstance(location, Path):
        location.parent.mkdir(parents=True, exist_ok=True)
    return StateStore.open(location)


@attrs.frozen
class Options:
    """The options several commands take, for the providers registered now."""

    providers: Sequence[Provider]
    common: Callable[[Any], Any]
    provider: Callable[[Any], Any]
    audience: Callable[[Any], Any]
    state: Callable[[Any], Any]
    channel: Callable[[Any], Any]

    @classmethod
    def build(cls) -> Options:
        among = registered()
        names = [p.name for p in among]
        return cls(
            providers=among,
            common=common(among),
            provider=click.option("--provider", "-p", required=True, type=click.Choice(names),
                                  help="Which provider."),
            audience=click.option("--audience", "-a", required=True, metavar="AUDIENCE",
                                  help="An audience id or name."),
            state=click.option("--state", type=_StatePath(), default=_default_state(),
                               show_default=True,
                               help="The state store: what earlier runs wrote, and checkpoints."),
            channel=click.option(
                "--channel", type=click.Choice([c.value for c in Channel
                                                if c is not Channel.UNKNOWN],
                                               case_sensitive=False),
                help="The audience's channel (Dexatel needs one to create an audience)."),
        )  # fmt: skip

    def endpoint(self, ctx: click.Context, param: click.Parameter, text: str) -> tuple[str, str]:
        """A ``PROVIDER:AUDIENCE`` value, the provider one of those registered."""
        provider, sep, audience = text.partition(":")
        if not sep or not audience or not provider:
            raise click.BadParameter(f"expected PROVIDER:AUDIENCE, got {text!r}")
        names = [p.name for p in self.providers]
        if provider not in names:
            raise click.BadParameter(
                f"unknown provider {provider!r}; use one of {', '.join(names)}"
            )
        return provider, audience
