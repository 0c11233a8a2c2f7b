"""What a provider gives the bulk engine: a :class:`ChunkWriter`, and the :class:`ChunkOutcome`
of each chunk it sends.

The engine reads the operations and keeps the last one per id; the writer's ``encode`` checks
and encodes them a few dozen at a time, in one loop of the provider's own, and the engine
gathers what it returns into chunks. ``send`` transmits a chunk; for a provider that applies
writes later, ``probe`` checks one accepted write, which ``settle`` repeats under the writer's
:class:`Poller`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

import attrs

from ..errors import AudienceKitError
from ..models import Operation, PendingChunk
from .poll import Poller
from .stats import CallStats

__all__ = ["ChunkOutcome", "ChunkWriter"]

E = TypeVar("E")


@attrs.frozen(kw_only=True)
class ChunkOutcome:
    """What a provider made of one chunk. Ids named in neither map were applied, unless the chunk
    is ``pending``: the provider accepted it under ``handle``, and the core settles it (waits
    for it) with the writer's ``settle``, at once or, with ``wait=False``, later."""

    failed: Mapping[str, AudienceKitError] = attrs.field(factory=dict)
    unknown: Mapping[str, AudienceKitError] = attrs.field(factory=dict)
    handle: str | None = None
    pending: bool = False


class ChunkWriter(Generic[E]):
    """How a provider writes one audience's members, a chunk at a time.

    A backend makes one per bulk call (:meth:`BaseBackend.chunk_writer
    <audiencekit.providers.base.BaseBackend.chunk_writer>`). The engine calls :meth:`encode`
    on the operations as they are read (one per id, the last of each), then :meth:`send` with
    a full chunk of what it returned; a ``pending`` outcome is later passed to :meth:`settle`.
    Subclasses set the
    class attributes and implement :meth:`send`, and :meth:`encode` and :meth:`probe` when
    they need them. The engine owns the rest: retries live in the transport, which shields the
    exchange of every write from cancellation; an accepted chunk's handle is reported before
    anything else runs; a chunk refused whole (400) is split to find the ids refused.
    """

    #: The most distinct ids in one chunk.
    chunk_size: int = 1_000
    #: Chunks in flight at once.
    concurrency: int = 1
    #: Whether a chunk refused whole may be sent again in parts to find the ids refused: not
    #: for a replace, where a second part would undo the first.
    splittable: bool = True
    #: How to wait for writes answered ``pending``: None for a provider that applies a write
    #: before it answers.
    poller: Poller | None = None
    #: For a provider that reads one id in several spellings (phone numbers, say): a method
    #: ``canonical(self, op)`` (or a function set on the instance) returning the operation in
    #: canonical form, or raising ValidationError. Called on each operation as it is read, so
    #: that the last operation per *canonical* id wins. None: ids are taken as they are.
    canonical: Callable[[Operation], Operation] | None = None
    #: Whether :meth:`encode` takes a bare id (a ``str`` in place of an operation: an add of a
    #: member with that id and no attributes, already checked as a member's id is), so that
    #: ``add_members`` with plain ids builds no Member. False: the engine hands it an Add.
    takes_ids: bool = False

    def __init__(self, audience_id: str) -> None:
        self.audience_id = audience_id

    def encode(self, ops: Mapping[str, Operation]) -> Mapping[str, E]:
        """Check operations (by id) against the provider's rules, in one loop of the
        provider's own, and return what a chunk keeps for each until it is sent, by the same
        ids; raise ValidationError naming every bad one. The engine calls it with a few dozen
        operations at a time, as they are read, and gathers the results into chunks.

        Keep entries compact and, where you can, as text (``str``): a chunk holds up to
        ``chunk_size`` of them while earlier chunks are in flight, and containers would be
        walked by every full garbage collection. By default the operations themselves are
        kept (for providers that send one request per member)."""
        return ops  # type: ignore[return-value]

    async def send(self, entries: Mapping[str, E], stats: CallStats) -> ChunkOutcome:
        """Transmit one chunk's entries (all of them, or a part when the engine narrows down a
        refusal) and report what became of them; pass ``stats`` to every request."""
        raise NotImplementedError

    async def probe(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome | None:
        """Check once whether the write accepted under ``handle`` was applied: its outcome, or
        None while the provider is still applying it."""
        raise NotImplementedError(f"{type(self).__name__} answered pending but cannot probe")

    async def settle(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome:
        """Wait until the write accepted under ``handle`` is applied (or refused): the writer's
        :meth:`probe`, repeated under its :attr:`poller`. A wait that runs out raises
        :class:`~audiencekit.PollTimeoutError` carrying the chunk, to resume with."""
        poller = self.poller
        if poller is None:
            raise NotImplementedError(f"{type(self).__name__} answered pending without a poller")
        audience_id = self.audience_id

        def probe() -> Awaitable[ChunkOutcome | None]:
            return self.probe(handle, ids, stats)

        return await poller.wait(
            probe,
            handle=handle,
            pending=lambda: [PendingChunk(handle=handle, audience_id=audience_id, ids=tuple(ids))],
            stats=stats,
        )
