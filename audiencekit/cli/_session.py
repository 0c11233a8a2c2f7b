"""What every command shares while it runs: the session, the exit codes, the one error path,
and async bodies run so that SIGTERM stops them as Ctrl-C does.

Every expected failure leaves through :func:`failure`: one line (JSON on stderr under
``--json``) and the exit code the help text documents; never a traceback.
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
from types import FrameType
from typing import Any

import anyio
import attrs
import click

from ..backend import AudienceBackend
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
)
from ..progress import ChunkDone, ProgressCallback, ProgressEvent
from ..providers import get_provider
from ._files import BadFileError
from ._output import Output

__all__ = [
    "BUSY", "EXIT_CODES", "FAILURE", "INTERRUPTED", "OK", "PARTIAL", "STATE", "TERMINATED",
    "TIMEOUT", "USAGE", "App", "Session", "Terminated", "failure", "run", "run_stoppable",
]  # fmt: skip

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


class Terminated(BaseException):
    """SIGTERM arrived: the command stops the way Ctrl-C stops it. A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way takes it for a failure."""


@attrs.define
class Session:
    """What the options common to every command set, and what an interrupt should say."""

    argv: list[str]
    as_json: bool = False
    #: The providers' options given on the command line (``--NAME-url``, ``--NAME-OPTION``),
    #: by provider, as the keywords its factory takes.
    options: dict[str, dict[str, str]] = attrs.Factory(dict)
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
        """The backend of a registered provider, built with the options given for it on the
        command line; everything else from its environment variables."""
        return get_provider(provider).build(**self.options.get(provider, {}))


def failure(exc: BaseException, session: Session) -> int:
    """Say what went wrong, in the command line's words; return the exit code. Under
    ``--json`` the error's ``type`` is the exception's class name (``Interrupted`` for Ctrl-C)."""
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
    session.out.error(message, kind=kind, code=code, **details)
    return code


class App(click.Group):
    """The root command: runs without click's own exit handling so that every failure goes
    through :func:`failure`, with ``--json`` honoured wherever it was given."""

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
            code = failure(exc, session)
        code = code if isinstance(code, int) else OK
        if standalone_mode:
            sys.exit(code)
        return code


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


def run_stoppable(body: Callable[[], Awaitable[int]]) -> int:
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


def run(function: Callable[..., Awaitable[int]]) -> Callable[..., int]:
    """A command body that is async: run under anyio, with the session first; SIGTERM stops
    it as Ctrl-C does."""

    @functools.wraps(function)
    @click.pass_obj
    def command(session: Session, /, **kwargs: Any) -> int:
        return run_stoppable(functools.partial(function, session, **kwargs))

    return command
