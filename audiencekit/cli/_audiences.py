"""``audiences list|show|create|delete``."""

from __future__ import annotations

from typing import Any

import click

from ..core.resolve import resolve_audience
from ..models import Audience
from ._options import Options, stacked
from ._session import OK, Session, run

__all__ = ["add_audiences"]


def add_audiences(app: click.Group, options: Options) -> None:
    """Add the ``audiences`` group to ``app``."""

    @app.group()
    def audiences() -> None:
        """List, show, create and delete audiences."""

    on_provider = stacked(options.provider, options.common, run)
    on_audience = stacked(click.argument("audience"), on_provider)

    @audiences.command(name="list")
    @on_provider
    async def list_audiences(session: Session, provider: str) -> int:
        """Every audience of the provider, in a table."""
        async with session.backend(provider) as backend:
            found = [_audience_dict(a) async for a in backend.list_audiences()]
        session.out.table(found, ["id", "name", "channel", "size", "created_at"])
        return OK

    @audiences.command()
    @on_audience
    async def show(session: Session, audience: str, provider: str) -> int:
        """One audience, by id or name."""
        async with session.backend(provider) as backend:
            found, _ = await resolve_audience(backend, audience)
        session.out.fields(_audience_dict(found))
        return OK

    @audiences.command()
    @click.argument("name")
    @options.channel
    @click.option("--exist-ok", is_flag=True,
                  help="Succeed, showing it, when an audience of this name exists.")  # fmt: skip
    @on_provider
    async def create(
        session: Session, name: str, provider: str, channel: str | None, exist_ok: bool
    ) -> int:
        """Create an audience named NAME."""
        async with session.backend(provider) as backend:
            made = await backend.create_audience(name, channel=channel, exist_ok=exist_ok)
        session.out.data(_audience_dict(made), lambda: f"{made.id}\t{made.name}")
        return OK

    @audiences.command()
    @on_audience
    async def delete(session: Session, audience: str, provider: str) -> int:
        """Delete an audience, by id or name."""
        async with session.backend(provider) as backend:
            found, _ = await resolve_audience(backend, audience)
            await backend.delete_audience(found.id)
        session.out.data({"deleted": found.id}, lambda: f"deleted {found.id} ({found.name})")
        return OK


def _audience_dict(audience: Audience) -> dict[str, Any]:
    return {
        "id": audience.id,
        "name": audience.name,
        "provider": audience.provider,
        "channel": audience.channel.value if audience.channel else None,
        "size": audience.size,
        "created_at": audience.created_at,
    }
