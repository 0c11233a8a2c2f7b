"""``demo``, ``emulator``, ``providers`` and ``completion``: the commands that manage no
audience."""

from __future__ import annotations

import contextlib
from typing import Any

import click
from click.shell_completion import get_completion_class

from ._options import Options, common
from ._session import FAILURE, OK, Session, Terminated, run

__all__ = ["add_tools"]

#: Contacts the demo adds through Dexatel's API (one request each, ~1.5 ms of client CPU): a
#: first look in seconds; the demo seeds the rest into the emulator.
DEMO_API_CONTACTS = 2_000


def add_tools(app: click.Group, options: Options) -> None:
    """Add the commands of this module to ``app``."""
    app.add_command(_demo(options))
    app.add_command(_emulator())
    app.add_command(_providers(options))
    app.add_command(_completion(app))


def _demo(options: Options) -> click.Command:
    @click.command()
    @click.option("--contacts", type=click.IntRange(1), default=20_000, show_default=True,
                  help="How many contacts the demo migrates.")  # fmt: skip
    @click.option("--api-contacts", type=click.IntRange(0), default=DEMO_API_CONTACTS,
                  show_default=True, help="How many of them are added through Dexatel's API "
                  "(one request each); the rest are seeded into its emulator.")  # fmt: skip
    @options.common
    @run
    async def demo(session: Session, contacts: int, api_contacts: int) -> int:
        """Run the demo on local emulators (no credentials).

        It fills a Dexatel emulator, migrates the audience to Batch's with faults switched on,
        and verifies that Batch holds exactly what Dexatel held."""
        from ..demo import run_demo

        summary = await run_demo(contacts=contacts, api_contacts=api_contacts, out=session.out)
        session.out.data(summary, lambda: _demo_text(summary))
        return OK if summary["verified"] else FAILURE

    return demo


def _emulator() -> click.Command:
    @click.command()
    @click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                  help="The first emulator's port, the others on the next ones, in the order "
                  "printed (0: free ports).")  # fmt: skip
    @click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
    @click.option("--index-delay", type=click.FloatRange(0), default=0.0, show_default=True,
                  metavar="SECONDS", help="Seconds before Batch applies a write.")  # fmt: skip
    @click.option("--index-polls", type=click.IntRange(0), default=0, show_default=True,
                  help="Views of its token before Batch applies a write.")  # fmt: skip
    @click.option("--batch-rate-limit", type=click.FloatRange(0, min_open=True),
                  metavar="PER_SECOND", help="Batch answers 429 past this many requests a "
                  "second per project (default: no limit).")  # fmt: skip
    @click.option("--batch-retry-after", is_flag=True,
                  help="Add a Retry-After header to Batch's 429 answers (Batch documents "
                  "none).")  # fmt: skip
    @click.option("--faults", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help="A JSON fault plan for every emulator.")  # fmt: skip
    @click.option(
        "--no-request-bodies",
        is_flag=True,
        help="Log requests without their bodies (less memory for long runs).",
    )
    @common([])  # --json only: the emulators connect to nothing
    @click.pass_obj
    def emulator(session: Session, /, **options: Any) -> int:
        """Serve every provider's emulator locally, until Ctrl-C.

        It prints, for each, the 'export NAME=value' lines of the variables the command line
        and open_backend read: paste them into another shell to use the emulators there.
        GET <url>/_emulator/requests or /_emulator/state shows what an emulator received and
        holds."""
        from ..testing.emulator import main as serve

        argv = [] if not session.as_json else ["--json"]  # the module's own options, same names
        for name, value in options.items():
            if value is True:
                argv.append(f"--{name.replace('_', '-')}")
            elif value not in (None, False):
                argv += [f"--{name.replace('_', '-')}", str(value)]
        with contextlib.suppress(Terminated):  # SIGTERM stops it as Ctrl-C does: quietly
            return serve(argv, prog="audiencekit emulator")
        return OK

    return emulator


def _providers(options: Options) -> click.Command:
    @click.command(name="providers")
    @options.common
    @click.pass_obj
    def list_providers(session: Session) -> int:
        """List the providers you can name, and the variables each reads."""
        rows = [
            {"name": p.name, "variables": " ".join(p.env.values()), "about": p.description}
            for p in options.providers
        ]
        session.out.table(rows, ["name", "variables", "about"])
        return OK

    return list_providers


def _completion(app: click.Group) -> click.Command:
    @click.command()
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    def completion(shell: str) -> int:
        """Print the shell completion script.

        \b
        eval "$(audiencekit completion bash)"    # in ~/.bashrc; likewise zsh, fish"""
        complete = get_completion_class(shell)
        assert complete is not None  # the three shells click knows
        click.echo(complete(app, {}, "audiencekit", "_AUDIENCEKIT_COMPLETE").source())
        return OK

    return completion


def _demo_text(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            "",
            "audiencekit demo — Dexatel audience migrated to Batch, on local emulators",
            f"  Dexatel contacts added (API) {summary['dexatel_added']:>7,}"
            f"   in {summary['fill_seconds']:.1f}s, {summary['dexatel_contact_calls']:,} calls",
            f"  Dexatel contacts seeded    {summary['dexatel_seeded']:>9,}"
            "   straight into the emulator",
            f"  Batch members migrated     {summary['batch_members']:>9,}"
            f"   in {summary['migrate_seconds']:.1f}s",
            f"  Batch update calls         {summary['batch_update_calls']:>9,}",
            f"  Batch view (poll) calls    {summary['batch_view_calls']:>9,}",
            f"  faults injected, survived  {summary['faults_survived']:>9,}",
            f"  verified identical         {'yes' if summary['verified'] else 'NO':>9}",
        ]
    )
