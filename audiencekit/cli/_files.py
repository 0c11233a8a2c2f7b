"""Member files (CSV or JSON Lines), read twice: once whole to check every row, then streamed.

The first pass (:meth:`MemberFile.check`) reads every row, checks it the way the backend will
before sending, counts the rows and keeps nothing, so memory stays flat; only a file without a
problem is read again to be sent. Standard input (``-``) is copied to a temporary file on the
first pass so that it can be read twice.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import attrs

from ..errors import ValidationError
from ..models import Member

__all__ = ["BadFileError", "MemberFile"]

#: How many bad rows a message spells out; the count says how many there are in all.
LISTED = 10

#: What a CSV file calls the member id, in the order looked for.
ID_COLUMNS = ("id", "number")


class BadFileError(Exception):
    """A member file that cannot be used: missing, unreadable, or with bad rows (``problems``:
    ``(line, message)`` pairs, the first :data:`LISTED` of ``count``)."""

    def __init__(
        self, message: str, problems: list[tuple[int, str]] | None = None, count: int = 0
    ) -> None:
        self.problems = problems or []
        self.count = count or len(self.problems)
        lines = [message] + [f"  line {line}: {why}" for line, why in self.problems]
        if self.count > len(self.problems):
            lines.append(f"  ... and {self.count - len(self.problems):,} more")
        super().__init__("\n".join(lines))
        self.message = message


@attrs.define
class MemberFile:
    """A member file given on the command line: ``path`` (``-`` for standard input) in
    ``format`` (``csv`` or ``jsonl``; from the extension when not given)."""

    path: str
    format: str
    rows: int = 0
    _stack: ExitStack = attrs.field(factory=ExitStack, init=False)
    _source: Path | None = attrs.field(default=None, init=False)

    @classmethod
    def open(cls, path: str, format: str | None = None) -> MemberFile:
        """Check that ``path`` can be read (a file, or ``-`` with something piped in)."""
        if path == "-":
            if sys.stdin is None or sys.stdin.isatty():
                raise BadFileError(
                    "reading members from the terminal: pipe a file in, or give its path"
                )
        else:
            file = Path(path)
            if not file.exists():
                raise BadFileError(f"{path}: no such file")
            if file.is_dir():
                raise BadFileError(f"{path}: is a directory, not a file")
            if not os.access(file, os.R_OK):
                raise BadFileError(f"{path}: cannot be read (permission denied)")
        fmt = format or ("csv" if path.lower().endswith(".csv") else "jsonl")
        return cls(path, fmt)

    def close(self) -> None:
        self._stack.close()

    def check(self, prepare: Callable[[Member], object]) -> int:
        """Read every row and check it with ``prepare`` (which raises ValidationError); return
        the number of rows, or raise :class:`BadFileError` naming each bad one by line."""
        problems: list[tuple[int, str]] = []
        count = 0
        rows = 0
        for line, item in self._rows():
            if isinstance(item, Member):
                try:
                    prepare(item)
                except ValidationError as exc:
                    item = "; ".join(str(p) for p in exc.problems)
            if isinstance(item, str):
                count += 1
                if len(problems) < LISTED:
                    problems.append((line, item))
            else:
                rows += 1
        if count:
            raise BadFileError(
                f"{self.path}: {count:,} bad row(s); nothing was sent", problems, count
            )
        self.rows = rows
        return rows

    def members(self) -> Iterator[Member]:
        """The members, streamed (after :meth:`check`)."""
        for line, item in self._rows():
            if isinstance(item, str):  # the file changed since it was checked
                raise BadFileError(f"{self.path}: line {line}: {item}")
            yield item

    # -- reading ---------------------------------------------------------------------------

    def _binary(self) -> IO[bytes]:
        if self.path != "-":
            return self._stack.enter_context(open(self.path, "rb"))
        if self._source is None:  # the first read: keep a copy to read again
            copy = self._stack.enter_context(tempfile.NamedTemporaryFile(suffix=".members"))  # noqa: SIM115
            shutil.copyfileobj(sys.stdin.buffer, copy)
            copy.flush()
            self._source = Path(copy.name)
        return self._stack.enter_context(open(self._source, "rb"))

    def _lines(self, problems: list[tuple[int, str]]) -> Iterator[str]:
        """The file's lines as text: UTF-8, a byte-order mark allowed; a line in another
        encoding is a problem (read with replacement characters so the rest is checked)."""
        handle = self._binary()
        try:
            for number, raw in enumerate(handle, 1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte, column = raw[exc.start], exc.start + 1
                    why = f"not UTF-8 (byte 0x{byte:02x} at column {column}): save it as UTF-8"
                    problems.append((number, why))
                    yield raw.decode("utf-8", errors="replace")
        finally:
            handle.close()

    def _rows(self) -> Iterator[tuple[int, Member | str]]:
        """``(line, member)`` for each row, or ``(line, why)`` for a bad one."""
        decoding: list[tuple[int, str]] = []
        lines = self._lines(decoding)
        rows = self._csv(lines) if self.format == "csv" else self._jsonl(lines)
        for line, item in rows:
            if decoding:
                yield from decoding
                decoding.clear()
            yield line, item
        yield from decoding

    def _csv(self, lines: Iterator[str]) -> Iterator[tuple[int, Member | str]]:
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            yield reader.line_num, f"not CSV: {exc}"
            return
        if header is None:
            return
        names = [name.strip() for name in header]
        key = next((c for c in ID_COLUMNS if c in names), None)
        if key is None:
            yield (
                1,
                "the header needs an 'id' (or 'number') column, got "
                + ", ".join(repr(n) for n in names),
            )
            return
        if "" in names or len(set(names)) < len(names):
            yield 1, "every column of the header needs a name of its own"
            return
        at = names.index(key)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte
                yield reader.line_num, f"not CSV: {exc}"
                return
            line = reader.line_num
            if not fields:
                continue
            if len(fields) > len(names):
                yield line, f"{len(fields)} fields, but the header has {len(names)}"
                continue
            attributes = {n: v for n, v in zip(names, fields, strict=False) if v and n != key}
            yield line, Member(fields[at] if at < len(fields) else "", attributes=attributes)

    def _jsonl(self, lines: Iterator[str]) -> Iterator[tuple[int, Member | str]]:
        for line, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                item: Any = json.loads(text)
            except ValueError as exc:
                yield line, f"not JSON ({exc.args[0].split(':')[0]})"
                continue
            if not isinstance(item, dict) or "id" not in item:
                yield line, 'expected an object with an "id"'
                continue
            attributes = item.get("attributes")
            if attributes is None:
                attributes = {k: v for k, v in item.items() if k != "id"}
            elif not isinstance(attributes, dict):
                yield line, f'"attributes" must be an object, got {type(attributes).__name__}'
                continue
            yield line, Member(item["id"], attributes=attributes)
