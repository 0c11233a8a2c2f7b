"""``runs``, ``runs show`` and ``retry``: the run history of the state store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
import click

from ..errors import RunHistoryError
from ..state.base import RunRecord, StateStore
from ._options import Options, state_store
from ._output import result_dict
from ._session import OK, PARTIAL, Session, run

__all__ = ["add_runs", "retry_hint"]

#: The table's columns.
COLUMNS = ["id", "kind", "provider", "audience", "started", "seconds", "outcome", "applied",
           "failed", "unknown", "error"]  # fmt: skip
#: How many characters of a run's id the table and the hints show (enough to be unique).
SHORT = 12


def retry_hint(session: Session, history_id: str | None, missed: int) -> list[str]:
    """The line that tells how to write again the ids a recorded run did not apply."""
    if history_id is None or missed == 0:
        return []
    state = _state_words(session)
    return [f"run {history_id[:SHORT]}: to retry the {missed:,} id(s) that did not make it, "
            f"run: audiencekit retry {history_id[:SHORT]}{state}"]  # fmt: skip


def add_runs(app: click.Group, options: Options) -> None:
    """Add ``runs`` (with ``runs show``) and ``retry`` to ``app``."""

    @app.group(invoke_without_command=True)
    @click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
                  help="How many runs, newest first.")  # fmt: skip
    @options.state
    @options.common
    @click.pass_context
    def runs(ctx: click.Context, limit: int, state: Path | str) -> int:
        """List the runs the state store recorded (sync, add, remove, migrate, retry).

        'runs show ID' lists the ids a run did not apply; 'retry ID' writes them again."""
        if ctx.invoked_subcommand is not None:
            return OK
        session: Session = ctx.obj
        with state_store(state) as store:
            found = store.runs(limit=limit)
        rows = [_run_row(r) for r in found]
        if session.as_json:
            session.out.data([_run_dict(r) for r in found], lambda: "")
        else:
            session.out.table(rows, COLUMNS)
        return OK

    @runs.command()
    @click.argument("run_id", metavar="ID")
    @options.state
    @options.common
    @click.pass_context
    def show(ctx: click.Context, run_id: str, state: Path | str) -> int:
        """One run, and every id it did not apply (failed or unknown), with why."""
        session: Session = ctx.obj
        parent = ctx.parent
        if (  # `runs --state X show ID`: the group's --state counts too
            parent is not None
            and ctx.get_parameter_source("state") is click.core.ParameterSource.DEFAULT
            and parent.get_parameter_source("state") is not click.core.ParameterSource.DEFAULT
        ):
            state = parent.params["state"]
        with state_store(state) as store:
            record = _find(store, run_id)
            outcomes = [
                {"id": o.id, "op": o.op, "status": o.status, "reason": o.reason}
                for o in store.run_outcomes(record.id)
            ]
        out = session.out

        def text() -> str:
            lines = [f"{k:<9} {v}" for k, v in _run_row(record).items() if k != "id"]
            lines.insert(0, f"{'id':<9} {record.id}")
            lines.append(f"{len(outcomes):,} id(s) did not make it" + (":" if outcomes else ""))
            lines += [f"  {o['id']}\t{o['op']}\t{o['status']}\t{o['reason']}" for o in outcomes]
            return "\n".join(lines)

        out.data({"run": _run_dict(record), "outcomes": outcomes}, text)
        return OK

    @app.command()
    @click.argument("run_id", metavar="ID")
    @options.state
    @options.common
    @run
    async def retry(session: Session, run_id: str, state: Path | str) -> int:
        """Write again the ids a recorded run did not apply (only those, not the whole run)."""
        from ..workflows import retry as retry_run

        store = state_store(state)
        try:
            record = await anyio.to_thread.run_sync(_find, store, run_id)
            session.resume = session.command()
            async with session.backend(record.provider) as backend:
                with session.progress(f"retry {record.id[:SHORT]}", None) as progress:
                    report = await retry_run(backend, store, record.id, on_progress=progress)
        finally:
            store.close()
        result = report.result
        data = {"retried": record.id, "history_id": report.run.id, "added": report.added,
                "removed": report.removed, **result_dict(result)}  # fmt: skip
        missed = len(result.failed) + len(result.unknown) + result.pending_count
        out = session.out

        def text() -> str:
            lines = [f"retried {record.id[:SHORT]} ({record.kind} of {record.audience}): "
                     f"sent {report.sent:,}, applied {result.applied:,}"]  # fmt: skip
            lines += out.causes(result.failed, "failed")
            lines += out.causes(result.unknown, "unknown (may or may not have been applied)")
            lines += retry_hint(session, report.run.id, missed)
            return "\n".join(lines)

        out.data(data, text)
        return OK if result.ok else PARTIAL


def _find(store: StateStore, run_id: str) -> RunRecord:
    record = store.run(run_id)
    if record is None:
        raise RunHistoryError(
            f"no run in {store.location} has an id starting with {run_id!r} "
            "(see 'audiencekit runs')",
            run=run_id,
        )
    return record


def _state_words(session: Session) -> str:
    """``--state X`` as the user gave it (nothing when they gave none)."""
    argv = session.argv
    for i, word in enumerate(argv):
        if word == "--state" and i + 1 < len(argv):
            return f" --state {argv[i + 1]}"
        if word.startswith("--state="):
            return f" {word}"
    return ""


def _run_row(record: RunRecord) -> dict[str, Any]:
    counts = record.counts
    return {
        "id": record.id[:SHORT],
        "kind": record.kind,
        "provider": record.provider,
        "audience": record.audience,
        "started": record.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(record.duration, 1),
        "outcome": record.outcome,
        "applied": counts.get("applied", 0),
        "failed": counts.get("failed", 0),
        "unknown": counts.get("unknown", 0),
        "error": record.error_type,
    }


def _run_dict(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "provider": record.provider,
        "scope": record.scope,
        "audience": record.audience,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat(),
        "outcome": record.outcome,
        "counts": dict(record.counts),
        "error_type": record.error_type,
        "parent": record.parent,
    }
