"""The ``audiencekit`` command (the ``cli`` extra adds progress bars; the demo needs emulators).

Providers come from the registry (:mod:`audiencekit.providers`), built-in or installed.
Credentials come from the environment only: each provider's variables (``DEXATEL_API_KEY``,
``BATCH_API_KEY`` and ``BATCH_PROJECT_KEY`` for the built-ins). Base URLs from ``--NAME-url``
(``--dexatel-url``, ``--batch-url``) or the provider's variable (``DEXATEL_BASE_URL``,
``BATCH_BASE_URL``): that is how it points at an emulator.

Exit codes: 0 success, 1 failure, 2 usage or bad input, 3 partial failure, 4 timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from . import __version__
from ._bulk import ChunkDone, ProgressEvent
from ._resolve import resolve_audience
from .backend import AudienceBackend
from .errors import (
    AudienceKitError,
    ConfigurationError,
    PartialFailureError,
    PollTimeoutError,
    ValidationError,
)
from .models import Audience, BulkResult, Member
from .providers import Provider, get_provider, providers

if TYPE_CHECKING:
    from .state import StateStore

__all__ = ["main"]

OK, FAILURE, USAGE, PARTIAL, TIMEOUT = 0, 1, 2, 3, 4


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- output -------------------------------------------------------------------------------------


class _Output:
    """Human-readable (with rich, when installed) or JSON, on stdout; messages on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console: Any = None
        if not as_json and sys.stderr.isatty():
            with contextlib.suppress(ImportError):
                from rich.console import Console

                self.console = Console(stderr=True)

    def data(self, value: Any, text: Callable[[], str]) -> None:
        if self.as_json:
            print(json.dumps(value, default=str, indent=2))
        else:
            print(text())

    def note(self, message: str) -> None:
        if not self.as_json:
            print(message, file=sys.stderr)

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[ProgressEvent], None]]:
        """A progress callback: a live bar with rich, a line now and then without."""
        if self.console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())  # fmt: skip
            with Progress(*columns, console=self.console, transient=False) as bar:
                task = bar.add_task(label, total=total)

                def update(event: ProgressEvent) -> None:
                    if isinstance(event, ChunkDone):
                        bar.advance(task, event.size)

                yield update
            return
        done = 0
        last = 0.0

        def report(event: ProgressEvent) -> None:
            nonlocal done, last
            if isinstance(event, ChunkDone):
                done += event.size
                if time.monotonic() - last > 2 or done == total:
                    last = time.monotonic()
                    self.note(f"{label}: {done:,}" + (f" of {total:,}" if total else ""))

        yield report


# -- backends from the environment ---------------------------------------------------------------


def _backend(args: argparse.Namespace, provider: str) -> AudienceBackend:
    """The backend of a registered provider: its base URL from ``--NAME-url`` when given,
    everything else from its environment variables (see :class:`~audiencekit.providers.
    Provider`)."""
    choices = [p.name for p in _registered()]
    if provider not in choices:
        raise _Exit(USAGE, f"unknown provider {provider!r}; use {' or '.join(choices)}")
    options: dict[str, Any] = {}
    url = getattr(args, f"{provider}_url", None)
    if url:
        options["base_url"] = url
    if provider == "batch" and args.batch_version:
        options["api_version"] = args.batch_version
    return get_provider(provider).build(**options)


def _default_state() -> Path:
    """The state store's file when ``--state`` is not given: in the user's data directory
    (platformdirs, from the ``cli`` extra; else the XDG rule), never a shared temporary one."""
    try:
        import platformdirs
    except ImportError:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return base / "audiencekit" / "state.sqlite3"
    return platformdirs.user_data_path("audiencekit") / "state.sqlite3"


def _state_store(path: str | None) -> StateStore | None:
    """The state store at ``path``, its directory made when missing."""
    if not path:
        return None
    from .state import StateStore

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return StateStore(path)


def _registered() -> list[Provider]:
    """The providers a user may name: every registered one but test doubles."""
    return [p for p in providers() if not p.hidden]


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
        "applied": result.applied,
        "failed": {k: str(v) for k, v in result.failed.items()},
        "unknown": {k: str(v) for k, v in result.unknown.items()},
        "operations": result.operations,
        "chunks": result.chunks,
        "retries": result.retries,
        "polls": result.polls,
        "elapsed": round(result.elapsed, 3),
    }


# -- reading members -----------------------------------------------------------------------------


def _open(path: str) -> IO[str]:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def _format(path: str, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def _members(path: str, fmt: str) -> Iterator[Member]:
    """Members from CSV (an ``id`` or ``number`` column, the others attributes) or JSON Lines
    (``{"id": ..., "attributes": {...}}``, or flat)."""
    with _open(path) as handle:
        if fmt == "csv":
            for row in csv.DictReader(handle):
                key = "id" if "id" in row else "number"
                if key not in row:
                    raise _Exit(USAGE, "the CSV needs an 'id' (or 'number') column")
                member_id = row.pop(key)
                yield Member(member_id, attributes={k: v for k, v in row.items() if v})
            return
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise _Exit(USAGE, f"line {line_number}: not JSON") from None
            if not isinstance(item, dict) or "id" not in item:
                raise _Exit(USAGE, f"line {line_number}: expected an object with an 'id'")
            attributes = item.get("attributes")
            if attributes is None:
                attributes = {k: v for k, v in item.items() if k != "id"}
            yield Member(item["id"], attributes=attributes)


# -- commands ----------------------------------------------------------------------------------


async def _audiences(args: argparse.Namespace, out: _Output) -> int:
    async with _backend(args, args.provider) as backend:
        if args.action == "list":
            found = [a async for a in backend.list_audiences()]
            out.data(
                [_audience_dict(a) for a in found],
                lambda: "\n".join(f"{a.id}\t{a.name}\t{a.size}" for a in found) or "(none)",
            )
        elif args.action == "show":
            audience, _ = await resolve_audience(backend, args.audience)
            out.data(_audience_dict(audience), lambda: "\n".join(
                f"{k}: {v}" for k, v in _audience_dict(audience).items()))  # fmt: skip
        elif args.action == "create":
            audience = await backend.create_audience(args.audience, channel=args.channel)
            out.data(_audience_dict(audience), lambda: f"created {audience.id}")
        else:
            audience, _ = await resolve_audience(backend, args.audience)
            await backend.delete_audience(audience.id)
            out.data({"deleted": audience.id}, lambda: f"deleted {audience.id}")
    return OK


async def _member_command(args: argparse.Namespace, out: _Output) -> int:
    from .sync import sync

    fmt = _format(args.file, args.format)
    async with _backend(args, args.provider) as backend:
        with out.progress(f"{args.action} {args.audience}", None) as progress:
            if args.action in ("add", "remove"):
                audience_id = (await resolve_audience(backend, args.audience))[0].id
            if args.action == "add":
                result = await backend.add_members(
                    audience_id, _members(args.file, fmt), on_progress=progress,
                    raise_on_failure=False,
                )  # fmt: skip
            elif args.action == "remove":
                ids = (m.id for m in _members(args.file, fmt))
                result = await backend.remove_members(
                    audience_id, ids, on_progress=progress, raise_on_failure=False
                )
            else:
                state = _state_store(args.state)
                try:
                    report = await sync(
                        backend, args.audience, _members(args.file, fmt), state=state,
                        on_progress=progress, raise_on_failure=False,
                    )  # fmt: skip
                finally:
                    if state is not None:
                        state.close()
                result = report.result
                out.note(
                    f"added {report.added:,}, changed {report.changed:,}, "
                    f"removed {report.removed:,}, unchanged {report.unchanged:,}"
                )
    out.data(_result_dict(result), lambda: _summary(result))
    return OK if result.ok else PARTIAL


def _summary(result: BulkResult) -> str:
    lines = [f"applied {result.applied:,} in {result.chunks} chunk(s), {result.elapsed:.1f}s"]
    if result.failed:
        lines.append(f"failed {len(result.failed):,}: " + ", ".join(list(result.failed)[:10]))
    if result.unknown:
        lines.append(f"unknown {len(result.unknown):,}: " + ", ".join(list(result.unknown)[:10]))
    return "\n".join(lines)


def _endpoint(text: str) -> tuple[str, str]:
    provider, sep, audience = text.partition(":")
    if not sep or not audience:
        raise _Exit(USAGE, f"expected PROVIDER:AUDIENCE, got {text!r}")
    return provider, audience


async def _migrate_command(args: argparse.Namespace, out: _Output) -> int:
    from .sync import migrate

    source_provider, source_audience = _endpoint(args.source)
    target_provider, target_audience = _endpoint(args.target)
    state = _state_store(args.state)
    try:
        async with (
            _backend(args, source_provider) as source,
            _backend(args, target_provider) as target,
        ):
            with out.progress("migrate", None) as progress:
                report = await migrate(
                    source, source_audience, target, target_audience, create=args.create,
                    channel=args.channel, dry_run=args.dry_run, state=state,
                    resume=args.resume, on_progress=progress,
                )  # fmt: skip
    finally:
        if state is not None:
            state.close()
    data = {
        "source": source_audience,
        "target": report.target_audience,
        "dry_run": report.dry_run,
        "read": report.read,
        "sent": report.sent,
        "applied": report.applied,
        "unchanged": report.unchanged,
        "failed": dict(report.failed),
        "unknown": dict(report.unknown),
        "invalid": [str(p) for p in report.invalid],
        "resumed_from": report.resumed_from,
        "target_size": report.target_size,
        "expected_size": report.expected_size,
        "verified": report.verified,
    }
    out.data(data, lambda: "\n".join(f"{k}: {v}" for k, v in data.items()))
    return OK if report.ok else PARTIAL


async def _demo(args: argparse.Namespace, out: _Output) -> int:
    from .demo import run_demo

    summary = await run_demo(contacts=args.contacts, out=out)
    out.data(summary, lambda: _demo_text(summary))
    return OK if summary["verified"] else FAILURE


def _demo_text(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            "",
            "audiencekit demo — Dexatel audience migrated to Batch, on local emulators",
            f"  Dexatel contacts added     {summary['dexatel_contacts']:>9,}"
            f"   in {summary['fill_seconds']:.1f}s",
            f"  Batch members migrated     {summary['batch_members']:>9,}"
            f"   in {summary['migrate_seconds']:.1f}s",
            f"  Batch update calls         {summary['batch_update_calls']:>9,}",
            f"  Batch view (poll) calls    {summary['batch_view_calls']:>9,}",
            f"  faults injected, survived  {summary['faults_survived']:>9,}",
            f"  verified identical         {'yes' if summary['verified'] else 'NO':>9}",
        ]
    )


def _emulator(argv: Sequence[str]) -> int:
    from .testing.emulator import main as emulator_main

    return emulator_main(argv, prog="audiencekit emulator")


# -- parsing -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    registered = _registered()
    default_state = _default_state()
    variables = sorted({v for p in registered for k, v in p.env.items() if k != "base_url"})
    parser = argparse.ArgumentParser(
        prog="audiencekit",
        description="Manage audiences of "
        + ", ".join(p.name for p in registered)
        + "; migrate between them; run the demo.",
        epilog=f"Credentials: {', '.join(variables)}.",
    )
    parser.add_argument("--version", action="version", version=f"audiencekit {__version__}")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    for provider in registered:
        variable = provider.env.get("base_url")
        parser.add_argument(
            f"--{provider.name.replace('_', '-')}-url",
            dest=f"{provider.name}_url",
            help=f"{provider.name} base URL" + (f" (or {variable})" if variable else ""),
        )
    parser.add_argument("--batch-version", help="Batch API version (default 2.3)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fill a Dexatel emulator, migrate it to Batch's")
    demo.add_argument("--contacts", type=int, default=20_000, help="how many (default 20,000)")

    commands.add_parser(
        "emulator", help="serve both emulators (options: see 'audiencekit emulator -- --help')"
    )

    choices = [p.name for p in registered]
    audiences = commands.add_parser("audiences", help="list, show, create, delete audiences")
    audiences.add_argument("action", choices=["list", "show", "create", "delete"])
    audiences.add_argument("audience", nargs="?", help="an id (show, delete) or name (create)")
    audiences.add_argument("--provider", required=True, choices=choices)
    audiences.add_argument("--channel", help="SMS, VIBER or WHATSAPP (Dexatel create)")

    members = commands.add_parser("members", help="add, remove or sync members from a file")
    members.add_argument("action", choices=["add", "remove", "sync"])
    members.add_argument("file", nargs="?", default="-", help="CSV or JSON Lines; - for stdin")
    members.add_argument("--provider", required=True, choices=choices)
    members.add_argument("--audience", required=True)
    members.add_argument("--format", choices=["csv", "jsonl"])
    members.add_argument(
        "--state",
        default=str(default_state),
        help=f"the state store file, for sync (default {default_state})",
    )

    migrate = commands.add_parser("migrate", help="copy an audience to another provider")
    migrate.add_argument("--from", dest="source", required=True, help="PROVIDER:AUDIENCE")
    migrate.add_argument("--to", dest="target", required=True, help="PROVIDER:AUDIENCE")
    migrate.add_argument("--create", action="store_true", help="create the target if missing")
    migrate.add_argument("--channel", help="the target's channel, when created on Dexatel")
    migrate.add_argument("--dry-run", action="store_true", help="check and count, send nothing")
    migrate.add_argument("--resume", action="store_true", help="continue an interrupted run")
    migrate.add_argument(
        "--state",
        default=str(default_state),
        help=f"the state store: checkpoints and what was written (default {default_state})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        return _emulator([a for a in argv[1:] if a != "--"])
    parser = build_parser()
    args = parser.parse_args(argv)
    out = _Output(args.json)
    if args.command == "audiences" and args.action != "list" and not args.audience:
        parser.error(f"audiences {args.action} needs an audience")
    handlers = {
        "demo": _demo,
        "audiences": _audiences,
        "members": _member_command,
        "migrate": _migrate_command,
    }
    try:
        return anyio.run(handlers[args.command], args, out)
    except _Exit as exc:
        out.note(f"audiencekit: {exc}")
        return exc.code
    except (ConfigurationError, ValidationError) as exc:
        out.note(f"audiencekit: {exc}")
        return USAGE
    except PollTimeoutError as exc:
        out.note(f"audiencekit: {exc}")
        return TIMEOUT
    except PartialFailureError as exc:
        out.note(f"audiencekit: {exc}")
        return PARTIAL
    except AudienceKitError as exc:
        out.note(f"audiencekit: {exc}")
        return FAILURE
    except KeyboardInterrupt:
        out.note("audiencekit: interrupted")
        return FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
