"""The ``audiencekit`` command, on click: its groups, built from the provider registry.

Each command group lives in a module of its own (``_audiences``, ``_members``, ``_migrate``,
``_runs``, ``_tools``); what they share is in ``_session`` (the session, exit codes, the one
error path) and ``_options`` (the options, from the registry).
"""

from __future__ import annotations

import click

from .. import __version__
from ._audiences import add_audiences
from ._members import add_members
from ._migrate import add_migrate
from ._options import Options
from ._runs import add_runs
from ._session import EXIT_CODES, App
from ._tools import add_tools

__all__ = ["EXIT_CODES", "build_app"]


def build_app() -> click.Group:
    """The command, with the providers registered now."""
    options = Options.build()
    variables = sorted({v for p in options.providers for k, v in p.env.items() if k != "base_url"})
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())

    @click.group(
        name="audiencekit",
        cls=App,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        epilog=f"Credentials come from the environment: {', '.join(variables)}.\n\n"
        f"\b\nExit codes:\n{codes}",
    )
    @click.version_option(__version__, prog_name="audiencekit", message="%(prog)s %(version)s")
    @options.common
    def app() -> None:
        """Manage the audiences of every registered provider, copy them from one to another,
        or run the demo."""

    add_tools(app, options)
    add_audiences(app, options)
    add_members(app, options)
    add_migrate(app, options)
    add_runs(app, options)
    return app
