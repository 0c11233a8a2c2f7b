"""``members add|remove|sync``: a checked file streamed to the provider, or synced to it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path

import anyio
import click

from ..backend import AudienceBackend
from ..core.resolve import resolve_audience
from ..models import Add, BulkResult, Member, Remove
from ._files import MemberFile
from ._options import Options, stacked, state_store
from ._output import Output, result_dict
from ._runs import retry_hint
from ._session import OK, PARTIAL, Session, run_stoppable

__all__ = ["add_members"]


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
    @options.state
    @options.common
    @click.pass_obj
    def add(session: Session, file: str, provider: str, audience: str, fmt: str | None,
            state: Path | str) -> int:  # fmt: skip
        """Add (or update) the members of FILE (the run is recorded in the state store)."""
        return _write(session, "add", file, fmt, provider, audience, state)

    @members.command(name="remove")
    @on_file
    @options.state
    @options.common
    @click.pass_obj
    def remove(session: Session, file: str, provider: str, audience: str, fmt: str | None,
               state: Path | str) -> int:  # fmt: skip
        """Remove the members of FILE (only their ids are read; the run is recorded)."""
        return _write(session, "remove", file, fmt, provider, audience, state)

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
    state_path: Path | str,
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
            _apply, session, backend, action, file, audience, rows, operation,
            state_path))  # fmt: skip
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
    state_path: Path | str,
) -> int:
    """``members add|remove``: every row, as one bulk call, recorded in the run history."""
    from ..workflows import ops_from_members, recording

    store = state_store(state_path)  # first: one that cannot be used stops the run at once
    try:
        async with backend:
            found, _ = await resolve_audience(backend, audience)
            session.resume = session.command()
            async with recording(store, backend, found.id, action) as run:
                with session.progress(f"{action} {found.name}", rows) as progress:
                    ops = (operation(member) for member in file.members())
                    result = await backend.apply(
                        found.id, ops, on_progress=progress, raise_on_failure=False
                    )
                await run.note(result, ops_from_members(action, file.members()))
                run.counts.update(sent=result.operations)
    finally:
        store.close()
    kinds = {"added" if action == "add" else "removed": (result.applied, result.operations)}
    return _summary(session, found.id, rows, result, kinds, history_id=run.id)


async def _sync(
    session: Session,
    backend: AudienceBackend,
    file: MemberFile,
    audience: str,
    rows: int,
    state_path: Path | str,
    dry_run: bool,
) -> int:
    """``members sync``: only the difference, journalled in the state store."""
    from ..workflows import sync

    # The store is opened first: one that cannot be used stops the run before any request.
    store = state_store(state_path)
    async with backend, contextlib.AsyncExitStack() as stack:
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
    return _summary(session, found.id, rows, report.result, kinds, report.unchanged,
                    history_id=report.history_id)  # fmt: skip


def _summary(
    session: Session,
    audience: str,
    rows: int,
    result: BulkResult,
    kinds: dict[str, tuple[int, int]],
    unchanged: int | None = None,
    *,
    history_id: str | None,
) -> int:
    """Print what a members command did (and how to retry what it did not apply); its exit
    code."""
    out = session.out
    missed = len(result.failed) + len(result.unknown) + result.pending_count
    hint = retry_hint(session, history_id, missed)
    data = {
        "audience": audience,
        "rows": rows,
        **{kind: total for kind, (_, total) in kinds.items()},
        **({} if unchanged is None else {"unchanged": unchanged}),
        **result_dict(result),
        "applied_by_kind": {kind: applied for kind, (applied, _) in kinds.items()},
        "history_id": history_id,
    }
    out.data(data, lambda: "\n".join([_result_text(out, result, rows, kinds, unchanged), *hint]))
    return OK if result.ok else PARTIAL


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
