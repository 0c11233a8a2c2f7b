"""What the command line prints: results on stdout (text, tables, or JSON), everything else on
stderr (notes, progress bars, errors), through rich."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ..errors import by_cause
from ..models import BulkResult
from ..progress import ChunkDone, ProgressEvent

__all__ = ["Output"]

#: How many ids a summary shows for each cause.
EXAMPLES = 3


class _Rate(ProgressColumn):
    """Ids per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} ids/s" if speed else "", style="progress.data.speed")


class _Count(ProgressColumn):
    """``done/total``, or ``done`` alone when the total is not known."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{task.completed:,.0f}", style="progress.download")
        return MofNCompleteColumn().render(task)


class Output:
    """Human-readable output, or JSON (``as_json``) for programs."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, soft_wrap=True, highlight=False)

    # -- results, on stdout --------------------------------------------------------------------

    def data(self, value: Any, text: Callable[[], str]) -> None:
        """``value`` as JSON, or ``text()`` for people."""
        if self.as_json:
            sys.stdout.write(json.dumps(value, default=str, indent=2) + "\n")
            sys.stdout.flush()
        else:
            self.out.print(text(), markup=False)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
        """Rows as a table with a header; tab-separated when stdout is not a terminal (for
        ``cut`` and ``awk``), JSON under ``--json``."""
        if self.as_json:
            self.data(list(rows), str)
            return
        people = self.out.is_terminal
        cells = [[_cell(row.get(c), people) for c in columns] for row in rows]
        if not people:
            for line in [[c.upper() for c in columns], *cells]:
                sys.stdout.write("\t".join(line) + "\n")
            return
        table = Table(*(c.upper() for c in columns), box=None, header_style="bold")
        for line in cells:
            table.add_row(*line)
        self.out.print(table)

    def fields(self, record: Mapping[str, Any]) -> None:
        """One record: a ``name value`` line per field (JSON under ``--json``)."""
        width = max(map(len, record), default=0) + 2
        self.data(record, lambda: "\n".join(
            f"{name:<{width}}{_cell(value, True)}" for name, value in record.items()))  # fmt: skip

    # -- the rest, on stderr -------------------------------------------------------------------

    def note(self, message: str) -> None:
        if not self.as_json:
            self.err.print(message, markup=False)

    def error(self, message: str, *, kind: str, code: int, **details: Any) -> None:
        """One error: a line (more when it lists bad rows) for people, a JSON object under
        ``--json``; always on stderr."""
        if self.as_json:
            error = {"type": kind, "message": message, "exit_code": code, **details}
            sys.stderr.write(json.dumps({"error": error}, default=str) + "\n")
        else:
            self.err.print(f"audiencekit: {message}", markup=False, style="red")

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[ProgressEvent], None]]:
        """A progress callback counting ids done: a live bar (total, rate, time left) on a
        terminal, a line every few seconds elsewhere, nothing under ``--json``."""
        if self.as_json:
            yield _ignore
            return
        if self.err.is_terminal:
            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _Count(),
                       _Rate(), TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
            with Progress(*columns, console=self.err) as bar:
                task = bar.add_task(label, total=total)

                def advance(event: ProgressEvent) -> None:
                    if isinstance(event, ChunkDone):
                        bar.advance(task, event.size)

                yield advance
            return
        done, last = 0, time.monotonic()

        def report(event: ProgressEvent) -> None:
            nonlocal done, last
            if isinstance(event, ChunkDone):
                done += event.size
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    self.note(f"{label}: {done:,}" + (f" of {total:,}" if total else ""))

        yield report

    # -- summaries ---------------------------------------------------------------------------

    def causes(self, outcomes: Mapping[str, Any], bucket: str) -> list[str]:
        """Lines saying why ids ended in ``bucket``: one per cause, with a few of its ids."""
        lines = []
        for cause, ids in by_cause(outcomes):
            sample = ", ".join(ids[:EXAMPLES]) + (", ..." if len(ids) > EXAMPLES else "")
            lines.append(f"{bucket} {len(ids):,}: {cause} ({sample})")
        return lines

    def would(self, counts: Mapping[str, int], examples: Mapping[str, Sequence[str]]) -> list[str]:
        """A dry run's lines: how many ids it would add, change and remove, with the first."""
        lines = []
        for kind, verb in (("added", "add"), ("changed", "change"), ("removed", "remove")):
            count, ids = counts.get(kind, 0), examples.get(kind, ())
            more = ", ..." if count > len(ids) else ""
            lines.append(f"would {verb} {count:,}" + (f": {', '.join(ids)}{more}" if ids else ""))
        return lines


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


def _ignore(event: ProgressEvent) -> None:
    pass


def _cell(value: Any, people: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and people:
        return f"{value:,}"
    return str(value)
