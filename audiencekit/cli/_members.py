"""``members add|remove|sync``: a checked file streamed to the provider, or synced to it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import click

from ..backend import AudienceBackend
from ..core.resolve import resolve_audience
from ..errors import by_cause
from ..models import Add, BulkResult, Member, Remove
from ._files import MemberFile
from ._options import Options, stacked, state_store
from ._output import EXAMPLES, Output
from ._session import OK, PARTIAL, Session, run_stoppable

__all__ = ["add_members", "result_dict"]


def add_members(app: click.Group, options: Options) -> None:
    """Add the ``members`` group to ``app``."""

    @app.group()
    def members() -> None:
        """Add, remove or sync members from a file.

        \b
        FILE is CSV (an 'id' or 'number' column; the other columns are attributes) or JSON
        Lines ({"id": ..., "attributes": {...}}), UTF-8; '-' reads standard input. Every row
        is checked before anything is sent.
        """

    on_file = stacked(
        click.argument("file", metavar="FILE"),
        options.provider,
        options.audience,
        click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
                     help="The file's format (default: from its name; .csv, else JSON Lines)."),
    )  # fmt: skip

    @members.command(name="add")
    @on_file
    @options.common
    @click.pass_obj
    def add(session: Session, file: str, provider: str, audience: str, fmt: str | None) -> int:
        """Add (or update) the members of FILE."""
        return _write(session, "add", file, fmt, provider, audience)

    @members.command(name="remove")
    @on_file
    @options.common
    @click.pass_obj
    def remove(session: Session, file: str, provider: str, audience: str, fmt: str | None) -> int:
        """Remove the members of FILE (only their ids are read)."""
        return _write(session, "remove", file, fmt, provider, audience)

    @members.command(name="sync")
    @on_file
    @options.state
    @click.option("--dry-run", is_flag=True,
                  help="Compare and print what would be sent (counts, the first ids of each "
                  "kind); send nothing.")  # fmt: skip
    @options.common
    @click.pass_obj
    def sync_members(session: Session, file: str, provider: str, audience: str,
                     fmt: str | None, state: Path | str, dry_run: bool) -> int:  # fmt: skip
        """Make the audience hold exactly the members of FILE, sending only the difference."""
        return _write(session, "sync", file, fmt, provider, audience, state, dry_run=dry_run)


def _write(
    session: Session,
    action: str,
    path: str,
    fmt: str | None,
    provider: str,
    audience: str,
    state_path: Path | str | None = None,
    *,
    dry_run: bool = False,
) -> int:
    """Check the whole file, then stream it to the provider. The check runs before the event
    loop starts, so that Ctrl-C stops it at once."""
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
        if action == "sync":
            return run_stoppable(functools.partial(
                _sync, session, backend, file, audience, rows, state_path, dry_run))  # fmt: skip
        return run_stoppable(functools.partial(
            _apply, session, backend, action, file, audience, rows, operation))  # fmt: skip
    finally:
        file.close()


async def _apply(
    session: Session,
    backend: AudienceBackend,
    action: str,
    file: MemberFile,
    audience: str,
    rows: int,
    operation: Callable[[Member], Add | Remove],
) -> int:
    """``members add|remove``: every row, as one bulk call."""
    async with backend:
        found, _ = await resolve_audience(backend, audience)
        session.resume = session.command()
        with session.progress(f"{action} {found.name}", rows) as progress:
            ops = (operation(member) for member in file.members())
            result = await backend.apply(
                found.id, ops, on_progress=progress, raise_on_failure=False
            )
    kinds = {"added" if action == "add" else "removed": (result.applied, result.operations)}
    return _summary(session.out, found.id, rows, result, kinds)


async def _sync(
    session: Session,
    backend: AudienceBackend,
    file: MemberFile,
    audience: str,
    rows: int,
    state_path: Path | str | None,
    dry_run: bool,
) -> int:
    """``members sync``: only the difference, journalled in the state store."""
    from ..workflows import sync

    # The store is opened first: one that cannot be used stops the run before any request.
    store = state_store(state_path) if state_path else None
    async with backend, contextlib.AsyncExitStack() as stack:
        if store is not None:
            stack.callback(store.close)
        found, _ = await resolve_audience(backend, audience)
        if not dry_run:
            session.resume = session.command()
        with session.progress(f"sync {found.name}", None) as progress:
            report = await sync(
                backend, found.id, file.members(), state=store, on_progress=progress,
                raise_on_failure=False, dry_run=dry_run,
            )  # fmt: skip
    counts = {kind: getattr(report, kind) for kind in ("added", "changed", "removed")}
    if dry_run:
        out = session.out
        data = {"audience": found.id, "rows": rows, "dry_run": True, **counts,
                "unchanged": report.unchanged, "examples": dict(report.examples)}  # fmt: skip
        out.data(data, lambda: "\n".join([
            *out.would(counts, report.examples),
            f"unchanged {report.unchanged:,} ({rows:,} row(s) read; nothing was sent)",
        ]))  # fmt: skip
        return OK
    kinds = {kind: (report.applied[kind], total) for kind, total in counts.items()}
    return _summary(session.out, found.id, rows, report.result, kinds, report.unchanged)


def _summary(
    out: Output,
    audience: str,
    rows: int,
    result: BulkResult,
    kinds: dict[str, tuple[int, int]],
    unchanged: int | None = None,
) -> int:
    """Print what a members command did; its exit code."""
    data = {
        "audience": audience,
        "rows": rows,
        **{kind: total for kind, (_, total) in kinds.items()},
        **({} if unchanged is None else {"unchanged": unchanged}),
        **result_dict(result),
        "applied_by_kind": {kind: applied for kind, (applied, _) in kinds.items()},
    }
    out.data(data, lambda: _result_text(out, result, rows, kinds, unchanged))
    return OK if result.ok else PARTIAL


def result_dict(result: BulkResult) -> dict[str, Any]:
    """A bulk result as the command line prints it under ``--json``."""
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
