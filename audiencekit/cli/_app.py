"""The ``audiencekit`` command, on click: its commands, built from the provider registry.

Every expected failure leaves through :func:`_failure`, the one error path: one line (JSON on
stderr under ``--json``) and the exit code the help text documents; never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import anyio
import attrs
import click
from click.shell_completion import get_completion_class

from .. import __version__
from ..backend import AudienceBackend
from ..core.resolve import resolve_audience
from ..errors import (
    APIError,
    AudienceBusyError,
    AudienceKitError,
    AuthenticationError,
    CheckpointError,
    ConfigurationError,
    PartialFailureError,
    PollTimeoutError,
    StateStoreError,
    ValidationError,
    by_cause,
)
from ..models import Add, Audience, BulkResult, Channel, Member, Remove
from ..progress import ChunkDone, ProgressCallback, ProgressEvent
from ..providers import Provider, get_provider, providers
from ._files import BadFileError, MemberFile
from ._output import EXAMPLES, Output

__all__ = ["EXIT_CODES", "build_app"]

OK, FAILURE, USAGE, PARTIAL, TIMEOUT, BUSY, STATE = 0, 1, 2, 3, 4, 5, 6
INTERRUPTED, TERMINATED = 130, 143

#: What each exit code means; shown in ``--help``.
EXIT_CODES = {
    OK: "success",
    FAILURE: "failure (the provider refused, could not be reached, or found nothing)",
    USAGE: "usage or bad input (nothing was sent)",
    PARTIAL: "partial failure (the summary names the ids, and why)",
    TIMEOUT: "writes accepted but not confirmed in time (running again is safe)",
    BUSY: "another run is writing the audience",
    STATE: "the state store cannot be used (the message says which, and why)",
    INTERRUPTED: "interrupted (Ctrl-C): the message says how to continue",
    TERMINATED: "stopped by SIGTERM, as by Ctrl-C: the message says how to continue",
}

#: Contacts the demo adds through Dexatel's API (one request each, ~1.5 ms of client CPU): a
#: first look in seconds; the demo seeds the rest into the emulator.
DEMO_API_CONTACTS = 2_000

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """SIGTERM arrived: the command stops the way Ctrl-C stops it. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way takes it for a failure."""


@attrs.define
class Session:
    """What the options common to every command set, and what an interrupt should say."""

    argv: list[str]
    as_json: bool = False
    urls: dict[str, str] = attrs.Factory(dict)
    batch_version: str | None = None
    #: How to continue after Ctrl-C or SIGTERM, set by a command once it starts writing.
    resume: str | None = None
    #: Ids the provider confirmed during this run (what an interrupt reports as done).
    applied: int = 0
    _output: Output | None = None

    @property
    def out(self) -> Output:
        if self._output is None or self._output.as_json != self.as_json:
            self._output = Output(self.as_json)
        return self._output

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[ProgressCallback]:
        """The output's progress callback, counting the ids applied as it goes."""
        with self.out.progress(label, total) as show:

            def count(event: ProgressEvent) -> None:
                if isinstance(event, ChunkDone):
                    self.applied += event.applied
                show(event)

            yield count

    def command(self, *extra: str, drop: Sequence[str] = ()) -> str:
        """This very command line, as a user would type it again (with ``extra``)."""
        kept = [a for a in self.argv if a not in drop]
        return shlex.join(["audiencekit", *kept, *(e for e in extra if e not in kept)])

    def backend(self, provider: str) -> AudienceBackend:
        """The backend of a registered provider: its base URL from ``--NAME-url`` when given,
        everything else from its environment variables."""
        options: dict[str, Any] = {}
        if provider in self.urls:
            options["base_url"] = self.urls[provider]
        if provider == "batch" and self.batch_version:
            options["api_version"] = self.batch_version
        return get_provider(provider).build(**options)


# -- the error path --------------------------------------------------------------------------


def _failure(exc: BaseException, session: Session) -> int:
    """Say what went wrong, in the command line's words; return the exit code. Under
    ``--json`` the error's ``type`` is the exception's class name (``Interrupted`` for Ctrl-C)."""
    out = session.out
    details: dict[str, Any] = {}
    kind = type(exc).__name__
    if isinstance(exc, (KeyboardInterrupt, click.Abort, Terminated)):
        code, kind, message = (
            (TERMINATED, "Terminated", "stopped by SIGTERM")
            if isinstance(exc, Terminated)
            else (INTERRUPTED, "Interrupted", "interrupted")
        )
        if session.resume:
            message += (
                f" after {session.applied:,} id(s) were applied; to continue, run: {session.resume}"
            )
            details["applied"] = session.applied
    elif isinstance(exc, click.UsageError):
        code = USAGE
        where = exc.ctx.command_path if exc.ctx is not None else "audiencekit"
        message = f"{exc.format_message()} (see '{where} --help')"
    elif isinstance(exc, click.ClickException):
        code, message = exc.exit_code, exc.format_message()
    elif isinstance(exc, BadFileError):
        code, message = USAGE, str(exc)
        details["problems"] = [{"line": line, "message": why} for line, why in exc.problems]
        details["count"] = exc.count
    elif isinstance(exc, CheckpointError):
        code = USAGE
        message = (
            "an earlier run of this migration was interrupted: add --resume to continue it, "
            "or --restart to start over"
            if exc.interrupted
            else "nothing to resume: no earlier run of this migration was interrupted"
        )
    elif isinstance(exc, ValidationError):
        code = USAGE
        problems = [str(p) for p in exc.problems]
        message = (
            problems[0]
            if len(problems) == 1
            else f"{len(problems):,} problems: "
            + ("; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""))
        )
        details["problems"] = problems
    elif isinstance(exc, ConfigurationError):
        code, message = USAGE, str(exc)
    elif isinstance(exc, AudienceBusyError):
        code, message = BUSY, str(exc)
    elif isinstance(exc, PollTimeoutError):
        code = TIMEOUT
        ids = sum(len(chunk.ids) for chunk in exc.pending)
        message = (
            f"{ids:,} ids were accepted but not confirmed applied in time "
            f"({len(exc.handles)} write(s) still being applied); running the command "
            "again is safe"
        )
    elif isinstance(exc, PartialFailureError):
        code, message = PARTIAL, str(exc)
    elif isinstance(exc, StateStoreError):
        code, message = STATE, str(exc)
        details.update(location=exc.location, reason=exc.reason)
    elif isinstance(exc, AuthenticationError):
        code = FAILURE
        message = f"{exc} (check the API key in the environment)"
    elif isinstance(exc, AudienceKitError):
        code, message = FAILURE, str(exc)
        if isinstance(exc, APIError):
            details["provider"] = exc.provider
    elif isinstance(exc, OSError):
        code, message = FAILURE, str(exc)
    else:
        raise exc
    out.error(message, kind=kind, code=code, **details)
    return code


class _App(click.Group):
    """The root command: runs without click's own exit handling so that every failure goes
    through :func:`_failure`, with ``--json`` honoured wherever it was given."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        argv = list(sys.argv[1:] if args is None else args)
        words = argv[: argv.index("--")] if "--" in argv else argv
        session = Session(argv, as_json="--json" in words)
        try:
            with _sigterm_raises():
                code = super().main(
                    argv, prog_name or "audiencekit", complete_var, standalone_mode=False,
                    obj=session, **extra,
                )  # fmt: skip
        except BrokenPipeError:  # `audiencekit ... | head`: the reader left; say nothing more
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = FAILURE
        except (Exception, KeyboardInterrupt, Terminated) as exc:  # sorted out there
            code = _failure(exc, session)
        code = code if isinstance(code, int) else OK
        if standalone_mode:
            sys.exit(code)
        return code


# -- options every command takes, in any position ----------------------------------------


def _common(registered: Sequence[Provider]) -> Callable[[F], F]:
    """``--json`` and the connection options, accepted before or after the command's name."""

    def remember(attribute: str, provider: str | None = None) -> Any:
        def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
            if not value:
                return
            session: Session = ctx.obj  # _App.main always passes one
            if provider is not None:
                session.urls[provider] = value
            else:
                setattr(session, attribute, value)

        return callback

    def decorate(command: F) -> F:
        options = [
            click.option("--json", "json_", is_flag=True, expose_value=False,
                         callback=remember("as_json"), help="Print results (and errors) as JSON."),
        ]  # fmt: skip
        for provider in registered:
            variable = provider.env.get("base_url")
            options.append(
                click.option(
                    f"--{provider.name.replace('_', '-')}-url",
                    expose_value=False,
                    callback=remember("urls", provider.name),
                    metavar="URL",
                    help=f"{provider.name} base URL" + (f" (or {variable})." if variable else "."),
                )
            )
        if any(p.name == "batch" for p in registered):
            options.append(
                click.option(
                    "--batch-version",
                    expose_value=False,
                    callback=remember("batch_version"),
                    metavar="VERSION",
                    help="Batch API version (default 2.3).",
                )
            )
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# -- SIGTERM stops a command as Ctrl-C does ---------------------------------------------------


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Outside the event loop (parsing, checking a file, printing), SIGTERM raises
    :class:`Terminated` where the program is, as SIGINT raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_stoppable(body: Callable[[], Awaitable[int]]) -> int:
    """Run an async command body under anyio. SIGTERM cancels it, as Ctrl-C does: what is in
    flight is finished or journalled and the store is closed on the way out; then
    :class:`Terminated` is raised."""

    async def stoppable() -> int:
        terminated = False
        done: list[int] = []
        failed: list[Exception] = []
        with anyio.open_signal_receiver(signal.SIGTERM) as received:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    nonlocal terminated
                    async for _ in received:
                        terminated = True
                        group.cancel_scope.cancel()

                group.start_soon(watch)
                try:
                    done.append(await body())
                except Exception as exc:  # raised below, not wrapped in the group's
                    failed.append(exc)
                group.cancel_scope.cancel()
        if terminated:
            raise Terminated
        if failed:
            raise failed[0]
        return done[0]

    if threading.current_thread() is not threading.main_thread():
        return anyio.run(body)  # signals reach the main thread only: no handler here
    try:
        return anyio.run(stoppable)
    finally:  # the loop put SIGTERM back to its default on the way out
        signal.signal(signal.SIGTERM, _raise_terminated)


def _run(function: Callable[..., Awaitable[int]]) -> Callable[..., int]:
    """A command body that is async: run under anyio, with the session first; SIGTERM stops
    it as Ctrl-C does."""

    @functools.wraps(function)
    @click.pass_obj
    def command(session: Session, /, **kwargs: Any) -> int:
        return _run_stoppable(functools.partial(function, session, **kwargs))

    return command


def _stacked(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The decorators as one, applied as if written one above the other."""

    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _registered() -> list[Provider]:
    """The providers a user may name: every registered one but test doubles."""
    return [p for p in providers() if not p.hidden]


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


# -- the commands ------------------------------------------------------------------------------


def build_app() -> click.Group:
    """The command, with the providers registered now."""
    registered = _registered()
    names = [p.name for p in registered]
    common = _common(registered)
    default_state = _default_state()
    variables = sorted({v for p in registered for k, v in p.env.items() if k != "base_url"})
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())

    provider_option = click.option(
        "--provider", "-p", required=True, type=click.Choice(names), help="Which provider."
    )
    audience_option = click.option(
        "--audience", "-a", required=True, metavar="AUDIENCE", help="An audience id or name."
    )
    state_option = click.option(
        "--state", type=_StatePath(), default=default_state,
        show_default=True, help="The state store: what earlier runs wrote, and checkpoints.",
    )  # fmt: skip
    channel_option = click.option(
        "--channel", type=click.Choice([c.value for c in Channel if c is not Channel.UNKNOWN],
                                       case_sensitive=False),
        help="The audience's channel (Dexatel needs one to create an audience).",
    )  # fmt: skip

    @click.group(
        name="audiencekit",
        cls=_App,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
        epilog=f"Credentials come from the environment: {', '.join(variables)}.\n\n"
        f"\b\nExit codes:\n{codes}",
    )
    @click.version_option(__version__, prog_name="audiencekit", message="%(prog)s %(version)s")
    @common
    def app() -> None:
        """Manage the audiences of every registered provider, copy them from one to another,
        or run the demo."""

    # -- demo, emulator, providers, completion ------------------------------------------------

    @app.command()
    @click.option("--contacts", type=click.IntRange(1), default=20_000, show_default=True,
                  help="How many contacts the demo migrates.")  # fmt: skip
    @click.option("--api-contacts", type=click.IntRange(0), default=DEMO_API_CONTACTS,
                  show_default=True, help="How many of them are added through Dexatel's API "
                  "(one request each); the rest are seeded into its emulator.")  # fmt: skip
    @common
    @_run
    async def demo(session: Session, contacts: int, api_contacts: int) -> int:
        """Run the demo on local emulators (no credentials).

        It fills a Dexatel emulator, migrates the audience to Batch's with faults switched on,
        and verifies that Batch holds exactly what Dexatel held."""
        from ..demo import run_demo

        summary = await run_demo(contacts=contacts, api_contacts=api_contacts, out=session.out)
        session.out.data(summary, lambda: _demo_text(summary))
        return OK if summary["verified"] else FAILURE

    @app.command()
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
    @click.option(
        "--batch-retry-after",
        is_flag=True,
        help="Add a Retry-After header to Batch's 429 answers (Batch documents none).",
    )
    @click.option("--faults", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help="A JSON fault plan for every emulator.")  # fmt: skip
    @click.option(
        "--no-request-bodies",
        is_flag=True,
        help="Log requests without their bodies (less memory for long runs).",
    )
    @_common([])  # --json only: the emulators connect to nothing
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

    @app.command(name="providers")
    @common
    @click.pass_obj
    def list_providers(session: Session) -> int:
        """List the providers you can name, and the variables each reads."""
        rows = [
            {"name": p.name, "variables": " ".join(p.env.values()), "about": p.description}
            for p in registered
        ]
        session.out.table(rows, ["name", "variables", "about"])
        return OK

    @app.command()
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    def completion(shell: str) -> int:
        """Print the shell completion script.

        \b
        eval "$(audiencekit completion bash)"    # in ~/.bashrc; likewise zsh, fish"""
        complete = get_completion_class(shell)
        assert complete is not None  # the three shells click knows
        click.echo(complete(app, {}, "audiencekit", "_AUDIENCEKIT_COMPLETE").source())
        return OK

    # -- audiences ------------------------------------------------------------------------------

    @app.group()
    def audiences() -> None:
        """List, show, create and delete audiences."""

    @audiences.command(name="list")
    @provider_option
    @common
    @_run
    async def list_audiences(session: Session, provider: str) -> int:
        """Every audience of the provider, in a table."""
        async with session.backend(provider) as backend:
            found = [_audience_dict(a) async for a in backend.list_audiences()]
        session.out.table(found, ["id", "name", "channel", "size", "created_at"])
        return OK

    on_audience = _stacked(click.argument("audience"), provider_option, common, _run)

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
    @provider_option
    @channel_option
    @click.option("--exist-ok", is_flag=True,
                  help="Succeed, showing it, when an audience of this name exists.")  # fmt: skip
    @common
    @_run
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

    # -- members --------------------------------------------------------------------------------

    @app.group()
    def members() -> None:
        """Add, remove or sync members from a file.

        \b
        FILE is CSV (an 'id' or 'number' column; the other columns are attributes) or JSON
        Lines ({"id": ..., "attributes": {...}}), UTF-8; '-' reads standard input. Every row
        is checked before anything is sent.
        """

    file_argument = click.argument("file", metavar="FILE")
    format_option = click.option(
        "--format", "fmt", type=click.Choice(["csv", "jsonl"]),
        help="The file's format (default: from its name; .csv, else JSON Lines).",
    )  # fmt: skip

    def member_command(action: str, summary: str) -> Callable[[Any], Any]:
        def decorate(body: Any) -> Any:
            body.__doc__ = summary
            command = _stacked(members.command(name=action), file_argument, provider_option,
                               audience_option, format_option, common, click.pass_obj)  # fmt: skip
            return command(body)

        return decorate

    @member_command("add", "Add (or update) the members of FILE.")
    def add(session: Session, file: str, provider: str, audience: str, fmt: str | None) -> int:
        return _write(session, "add", file, fmt, provider, audience)

    @member_command("remove", "Remove the members of FILE (only their ids are read).")
    def remove(session: Session, file: str, provider: str, audience: str, fmt: str | None) -> int:
        return _write(session, "remove", file, fmt, provider, audience)

    @members.command(name="sync")
    @file_argument
    @provider_option
    @audience_option
    @format_option
    @state_option
    @common
    @click.pass_obj
    def sync_members(
        session: Session,
        file: str,
        provider: str,
        audience: str,
        fmt: str | None,
        state: Path | str,
    ) -> int:
        """Make the audience hold exactly the members of FILE, sending only the difference."""
        return _write(session, "sync", file, fmt, provider, audience, state)

    # -- migrate --------------------------------------------------------------------------------

    @app.command()
    @click.option("--from", "source", required=True, metavar="PROVIDER:AUDIENCE",
                  callback=_endpoint, help="The audience to copy.")  # fmt: skip
    @click.option("--to", "target", required=True, metavar="PROVIDER:AUDIENCE",
                  callback=_endpoint, help="The audience to copy it to.")  # fmt: skip
    @click.option("--create", is_flag=True, help="Create the target when it does not exist.")
    @channel_option
    @click.option("--dry-run", is_flag=True, help="Read and check; send nothing.")
    @click.option("--resume", is_flag=True, help="Continue an interrupted run.")
    @click.option("--restart", is_flag=True,
                  help="Forget an interrupted run and start over.")  # fmt: skip
    @state_option
    @common
    @_run
    async def migrate(
        session: Session,
        source: tuple[str, str],
        target: tuple[str, str],
        create: bool,
        channel: str | None,
        dry_run: bool,
        resume: bool,
        restart: bool,
        state: Path | str,
    ) -> int:
        """Copy an audience to another provider, then verify.

        The target ends up holding exactly the source's members (what only the target held
        is removed); an interrupted run continues with --resume."""
        from ..workflows import migrate as run_migration

        if resume and restart:
            raise click.UsageError("--resume and --restart exclude each other")
        store = _state_store(state)
        try:
            async with (
                session.backend(source[0]) as source_backend,
                session.backend(target[0]) as target_backend,
            ):
                found, _ = await resolve_audience(source_backend, source[1])
                if not dry_run:
                    session.resume = session.command("--resume", drop=["--restart"])

                async def run(resume: bool) -> Any:
                    with session.progress(f"migrate {source[1]}", found.size) as progress:
                        return await run_migration(
                            source_backend, found.id, target_backend, target[1], create=create,
                            channel=channel, dry_run=dry_run, state=store, resume=resume,
                            on_progress=progress,
                        )  # fmt: skip

                try:
                    report = await run(resume)
                except CheckpointError as exc:
                    if not (restart and exc.interrupted):
                        raise
                    await anyio.to_thread.run_sync(store.clear_checkpoint, exc.run)
                    report = await run(False)
        finally:
            store.close()
        data = attrs.asdict(report, recurse=False)
        data.update(source_audience=source[1], verified=report.verified,
                    invalid=[str(p) for p in report.invalid], ok=report.ok)  # fmt: skip
        data.pop("target_ids", None)
        data.pop("expected_ids", None)
        session.out.data(data, lambda: _migration_text(session.out, data, report))
        return OK if report.ok else PARTIAL

    return app


# -- what the commands share ---------------------------------------------------------------------


def _write(
    session: Session,
    action: str,
    path: str,
    fmt: str | None,
    provider: str,
    audience: str,
    state_path: Path | str | None = None,
) -> int:
    """``members add|remove|sync``: check the whole file, then stream it to the provider. The
    check runs before the event loop starts, so that Ctrl-C stops it at once."""
    file = MemberFile.open(path, fmt)
    try:
        backend = session.backend(provider)
        operation: Callable[[Member], Add | Remove] = (
            (lambda m: Remove(m.id)) if action == "remove" else Add
        )
        try:
            rows = file.check(lambda member: backend.prepare(operation(member)))
        except BaseException:
            anyio.run(backend.aclose)
            raise
        send = functools.partial(_send, session, backend, action, file, operation, audience)
        return _run_stoppable(functools.partial(send, rows, state_path))
    finally:
        file.close()


async def _send(
    session: Session,
    backend: AudienceBackend,
    action: str,
    file: MemberFile,
    operation: Callable[[Member], Add | Remove],
    audience: str,
    rows: int,
    state_path: Path | str | None,
) -> int:
    from ..workflows import sync

    out = session.out
    # The store is opened first: one that cannot be used stops the run before any request.
    store = _state_store(state_path) if action == "sync" and state_path else None
    async with backend, contextlib.AsyncExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        found, _ = await resolve_audience(backend, audience)
        session.resume = session.command()
        label = f"{action} {found.name}"
        unchanged: int | None = None
        if action == "sync":
            with session.progress(label, None) as progress:
                report = await sync(
                    backend, found.id, file.members(), state=store,
                    on_progress=progress, raise_on_failure=False,
                )  # fmt: skip
            result = report.result
            kinds = {kind: (report.applied[kind], getattr(report, kind))
                     for kind in ("added", "changed", "removed")}  # fmt: skip
            unchanged = report.unchanged
        else:
            with session.progress(label, rows) as progress:
                ops = (operation(member) for member in file.members())
                result = await backend.apply(
                    found.id, ops, on_progress=progress, raise_on_failure=False
                )
            kinds = {"added" if action == "add" else "removed": (result.applied, result.operations)}
    data = {
        "audience": found.id,
        "rows": rows,
        **{kind: total for kind, (_, total) in kinds.items()},
        **({} if unchanged is None else {"unchanged": unchanged}),
        **_result_dict(result),
        "applied_by_kind": {kind: applied for kind, (applied, _) in kinds.items()},
    }
    out.data(data, lambda: _result_text(out, result, rows, kinds, unchanged))
    return OK if result.ok else PARTIAL


def _endpoint(ctx: click.Context, param: click.Parameter, text: str) -> tuple[str, str]:
    provider, sep, audience = text.partition(":")
    if not sep or not audience or not provider:
        raise click.BadParameter(f"expected PROVIDER:AUDIENCE, got {text!r}")
    names = [p.name for p in _registered()]
    if provider not in names:
        raise click.BadParameter(f"unknown provider {provider!r}; use one of {', '.join(names)}")
    return provider, audience


def _state_store(location: Path | str) -> Any:
    """The state store at ``location``: a URL's server, or a file whose folder is made when
    missing."""
    from ..state import StateStore

    if isinstance(location, Path):
        location.parent.mkdir(parents=True, exist_ok=True)
    return StateStore.open(location)


def _audience_dict(audience: Audience) -> dict[str, Any]:
    return {
        "id": audience.id,
        "name": audience.name,
        "provider": audience.provider,
        "channel": audience.channel.value if audience.channel else None,
        "size": audience.size,
        "created_at": audience.created_at,
    }


def _result_dict(result: BulkResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "applied": result.applied,
        "failed": {k: str(v) for k, v in result.failed.items()},
        "unknown": {k: str(v) for k, v in result.unknown.items()},
        "causes": [
            {"outcome": bucket, "cause": cause, "count": len(ids), "examples": ids[:EXAMPLES]}
            for bucket, outcomes in (("failed", result.failed), ("unknown", result.unknown))
            for cause, ids in by_cause(outcomes)
        ],
        "operations": result.operations,
        "chunks": result.chunks,
        "retries": result.retries,
        "polls": result.polls,
        "elapsed": round(result.elapsed, 3),
    }


def _result_text(
    out: Output,
    result: BulkResult,
    rows: int,
    kinds: dict[str, tuple[int, int]],
    unchanged: int | None,
) -> str:
    """What a members command did: each kind of write, applied of its own total."""
    parts = [f"{kind} {applied:,} of {total:,}" for kind, (applied, total) in kinds.items()]
    if unchanged is not None:
        parts.append(f"unchanged {unchanged:,}")
    repeated = rows - result.operations if unchanged is None else 0
    if repeated > 0:
        parts.append(f"{repeated:,} repeated row(s) counted once")
    lines = [
        f"{', '.join(parts)} ({rows:,} row(s) read; {result.chunks:,} request(s), "
        f"{result.elapsed:.1f}s)"
    ]
    lines += out.causes(result.failed, "failed")
    lines += out.causes(result.unknown, "unknown (may or may not have been applied)")
    return "\n".join(lines)


def _migration_text(out: Output, data: dict[str, Any], report: Any) -> str:
    lines = [
        f"{'checked' if report.dry_run else 'migrated'} {data['source_audience']} -> "
        f"{report.target_audience}: read {report.read:,}, sent {report.sent:,}, "
        f"applied {report.applied:,}, unchanged {report.unchanged:,}, removed {report.removed:,}"
    ]
    if report.resumed_from:
        lines.append(f"resumed from {report.resumed_from:,}")
    lines += out.causes(report.failed, "failed")
    lines += out.causes(report.unknown, "unknown (may or may not have been applied)")
    lines += [f"invalid: {p}" for p in data["invalid"][:10]]
    verified = {True: "yes", False: "NO", None: "not checked"}[report.verified]
    lines.append(f"verified identical: {verified}")
    return "\n".join(lines)


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
