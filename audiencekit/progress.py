"""What a bulk call reports as it goes: one event per chunk sent, accepted and done."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import attrs

__all__ = ["ChunkAccepted", "ChunkDone", "ChunkSent", "ProgressCallback", "ProgressEvent"]


@attrs.frozen(kw_only=True)
class ChunkSent:
    """A chunk is being handed to the provider: the operations ``first`` to ``last`` of the
    input (1-based), collapsed to one per id: ``ids``, ``size`` of them."""

    chunk: int
    size: int
    first: int
    last: int
    ids: tuple[str, ...] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ChunkAccepted:
    """The provider accepted a chunk's write under ``handle``; it is not applied yet."""

    chunk: int
    handle: str
    first: int
    last: int
    ids: tuple[str, ...] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ChunkDone:
    """A chunk finished (or was accepted, when ``pending``); ``*_total`` count the call so far.

    ``failed_ids`` and ``unknown_ids`` name the ids that did not make it; every other id of
    ``ids`` was applied, or is pending under ``handle``.
    """

    chunk: int
    size: int
    applied: int
    failed: int
    unknown: int
    pending: int
    applied_total: int
    failed_total: int
    unknown_total: int
    operations_read: int
    handle: str | None = None
    ids: tuple[str, ...] = attrs.field(default=(), repr=False)
    failed_ids: tuple[str, ...] = attrs.field(default=(), repr=False)
    unknown_ids: tuple[str, ...] = attrs.field(default=(), repr=False)


ProgressEvent: TypeAlias = ChunkSent | ChunkAccepted | ChunkDone
ProgressCallback: TypeAlias = Callable[[ProgressEvent], None]
