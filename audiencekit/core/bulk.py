"""The bulk engine: stream → last-wins collapse → validated chunks → bounded concurrency → result.

Providers supply a :class:`~audiencekit.core.chunkwriter.ChunkWriter`: how to check and encode
operations, send a chunk, and (for write-then-wait providers) check a chunk sent earlier;
everything else is here once. Memory holds the chunk being filled and the chunks in flight,
never the whole input.

Ordering: within a chunk only the last operation per id is sent. Across chunks, a chunk that
touches an id still in flight in an earlier chunk is held back until that earlier chunk has
settled, so the final state of every id is its last operation even when the provider applies
concurrent writes in any order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeAlias, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ..errors import (
    AudienceKitError,
    BadRequestError,
    PollTimeoutError,
    Problem,
    ValidationError,
    may_have_taken_effect,
)
from ..models import Add, BulkResult, Member, Operation, PendingChunk
from ..progress import ChunkAccepted, ChunkDone, ChunkSent, ProgressCallback, ProgressEvent
from .checks import check_id, check_operation, plain_key, validate_all
from .chunkwriter import ChunkOutcome, ChunkWriter
from .clock import monotonic
from .stats import CallStats

__all__ = [
    "last_outcome_wins",
    "run_bulk",
    "settle_pending",
]

Operations: TypeAlias = Iterable[Operation] | AsyncIterable[Operation]
#: What the engine reads: operations, or with ``bare_ids`` Members and ``str`` ids (adds).
Items: TypeAlias = Iterable[Operation | Member | str] | AsyncIterable[Operation | Member | str]
#: A part of a chunk in the tally: the chunk's number, the part's number.
Key: TypeAlias = tuple[int, int]
T = TypeVar("T")


@attrs.frozen
class Chunk:
    """The entries of distinct ids (what the writer's ``encode`` made of their operations), in
    input order of each id's first appearance; ``seq`` from 0."""

    seq: int
    entries: Mapping[str, Any]
    #: The input positions (1-based) of the first and the last operation read into the chunk.
    first: int = 0
    last: int = 0


Preparer: TypeAlias = Callable[[Operation], Operation]


#: Operations the chunker hands the writer's ``encode`` at a time. Small, so that an operation is
#: encoded (and freed) soon after it is read: operations kept until a chunk of 10,000 is full
#: outlive the young garbage-collector generations, and the full collections that then walk them
#: cost more than the encoding itself (measured: 30% more CPU for 1,000,000 Batch adds). A call
#: per 32 operations still spares the provider's per-operation calls.
ENCODE_BATCH = 32


class _Chunker:
    """Collects operations into chunks of at most ``size`` distinct ids, last operation wins.
    The writer's ``encode`` checks and encodes them a batch at a time, as they are read."""

    def __init__(
        self, writer: ChunkWriter[Any], *, checked: bool = False, bare_ids: bool = False
    ) -> None:
        self._size = writer.chunk_size
        self._canonical = writer.canonical
        self._encode = writer.encode
        self._checked = checked
        self._bare_ids = bare_ids
        #: Whether a bare id reaches ``encode`` as it is: else it becomes an Add of a Member.
        self._takes_ids = writer.takes_ids and writer.canonical is None
        self._entries: dict[str, object] = {}  # the chunk's encoded entries, by id
        self._waiting: dict[str, Any] = {}  # read, not encoded yet (later than entries)
        self._distinct = 0  # ids in either
        self._problems: list[Problem] = []
        self._seq = 0
        self._first = 1
        self.read = 0

    def take(self, ops: Iterable[Any]) -> Iterator[Chunk]:
        """Read ``ops`` and yield each chunk that fills up. The loop of every operation of a
        bulk call, provider-neutral: the cheap checks, the canonical id when the provider has
        one, the last operation per id. Its state sits in locals, written back before each
        yield and at the end."""
        size, canonical, checked, batch = self._size, self._canonical, self._checked, ENCODE_BATCH
        bare, takes_ids = self._bare_ids, self._takes_ids
        entries, waiting, read, distinct = self._entries, self._waiting, self.read, self._distinct
        try:
            for op in ops:
                read += 1
                key: str | None
                if bare and type(op) is str:  # an id alone: an add of a member without attributes
                    key = op
                    plain = checked or (key.isascii() and key and not key.isspace())
                    if not (takes_ids and plain):
                        try:
                            if not checked:
                                check_id(key)
                            if not takes_ids:  # the writer wants operations: one is built
                                op = Add(Member(key))
                                if canonical is not None and not checked:
                                    op = canonical(op)
                                    key = op.id
                        except ValidationError as exc:
                            self._problems.extend(exc.problems)
                            continue
                else:
                    if bare and not checked:  # add_members: a Member (else refused below)
                        op = Add(op)
                    if not checked:
                        key = plain_key(op) if canonical is None else None
                        if key is None:  # not the common case: the full checks
                            try:
                                op = check_operation(op)
                                if canonical is not None:
                                    op = canonical(op)
                            except ValidationError as exc:
                                self._problems.extend(exc.problems)
                                continue
                            key = op.member.id if type(op) is Add else op.id
                    else:
                        key = op.member.id if type(op) is Add else op.id
                if key not in waiting:
                    if key not in entries:
                        if distinct >= size:  # full: this operation starts the next chunk
                            self.read, self._distinct = read, distinct
                            chunk = self._close(last=read - 1)
                            entries, waiting = self._entries, self._waiting
                            waiting[key] = op
                            distinct = 1
                            yield chunk
                            continue
                        distinct += 1
                    if len(waiting) >= batch:
                        self._encode_waiting()
                        waiting = self._waiting
                waiting[key] = op
        finally:
            self.read, self._distinct = read, distinct

    def flush(self) -> Chunk | None:
        pending = self._entries or self._waiting or self._problems
        return self._close(last=self.read) if pending else None

    def _encode_waiting(self) -> None:
        waiting, self._waiting = self._waiting, {}
        try:
            self._entries.update(self._encode(waiting))
        except ValidationError as exc:
            self._problems.extend(exc.problems)

    def _close(self, *, last: int) -> Chunk:
        if self._waiting:
            self._encode_waiting()
        if self._problems:
            problems, self._problems = self._problems, []
            raise ValidationError(problems)
        chunk = Chunk(self._seq, self._entries, first=self._first, last=last)
        self._entries = {}
        self._distinct = 0
        self._seq += 1
        self._first = last + 1
        return chunk


@attrs.define
class _Part:
    """Some ids of a chunk and what became of them. A chunk is one part, unless the provider
    refused it and it was split to find the ids it refused for."""

    ids: Mapping[str, None]
    outcome: ChunkOutcome


@attrs.define
class _Flight:
    """A chunk on its way. It keeps the chunk's ids only (a dict of them, for set tests in C):
    the entries are freed once sent, while the provider indexes the write."""

    seq: int
    first: int
    last: int
    stats: CallStats
    ids: Mapping[str, None]
    done: anyio.Event = attrs.field(factory=anyio.Event)
    parts: list[_Part] = attrs.field(factory=list)
    settled: bool = False


def split_budget(size: int) -> int:
    """The most requests a refused chunk of ``size`` ids may cost while it is split to find the
    ids refused: two a halving, for about four bad ids (one costs 28 in 10,000)."""
    return 8 * math.ceil(math.log2(max(size, 2))) + 8


def outcome_of(ids: Iterable[str], error: AudienceKitError) -> ChunkOutcome:
    """The outcome of a chunk whose sending raised ``error``: every id failed, or unknown when
    the provider may have applied it anyway."""
    bucket = dict.fromkeys(ids, error)
    if may_have_taken_effect(error):
        return ChunkOutcome(unknown=bucket)
    return ChunkOutcome(failed=bucket)


def _same_reason(a: BadRequestError, b: BadRequestError) -> bool:
    """Two refusals for one reason: not about particular ids, so splitting further is futile."""
    return (type(a), a.code, a.message) == (type(b), b.code, b.message)


def last_outcome_wins(
    failed: dict[str, AudienceKitError],
    unknown: dict[str, AudienceKitError],
    ids: Iterable[str],
    *,
    failed_now: Mapping[str, AudienceKitError] | None = None,
    unknown_now: Mapping[str, AudienceKitError] | None = None,
) -> dict[str, AudienceKitError]:
    """Record in ``failed`` and ``unknown`` the outcome of the latest operations on ``ids``:
    it replaces whatever an earlier operation of an id left (an id now applied leaves both).
    Returns the unknown ones recorded (those not also failed)."""
    if failed or unknown:
        for id_ in ids:
            failed.pop(id_, None)
            unknown.pop(id_, None)
    failed_now = failed_now or {}
    fresh = {k: v for k, v in (unknown_now or {}).items() if k not in failed_now}
    failed.update(failed_now)
    unknown.update(fresh)
    return fresh


class _Tally:
    """Accounts for every id of a call: the bucket of an id is the outcome of its last chunk."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self._on_progress = on_progress
        self.start = monotonic()
        self.applied = 0
        self.failed: dict[str, AudienceKitError] = {}
        self.unknown: dict[str, AudienceKitError] = {}
        self.pending: dict[Key, PendingChunk] = {}
        self.handles: dict[Key, str] = {}
        #: Accepted chunks whose state could not be confirmed, by handle: why (None: the
        #: deadline passed).
        self.unconfirmed: dict[str, AudienceKitError | None] = {}
        self.chunks = 0
        self.retries = 0
        self.polls = 0
        self.read = 0
        self._counted: dict[Key, tuple[int, int, int]] = {}  # pending part -> its counts

    @property
    def listening(self) -> bool:
        """Whether anyone hears the events: when nobody does, none is built (each copies the
        ids of a chunk)."""
        return self._on_progress is not None

    def emit(self, event: ProgressEvent) -> None:
        if self._on_progress is not None:
            self._on_progress(event)

    def unconfirmed_outcome(self, handle: str, error: AudienceKitError) -> ChunkOutcome:
        """An accepted chunk whose state could not be learned stays pending under its handle."""
        self.unconfirmed[handle] = None if isinstance(error, PollTimeoutError) else error
        return ChunkOutcome(handle=handle, pending=True)

    def record(
        self,
        key: Key,
        seq: int,
        audience_id: str,
        ids: Collection[str],
        outcome: ChunkOutcome,
        stats: CallStats | None,
    ) -> None:
        """Account for one part of chunk ``seq``; the first part of a chunk brings its
        ``stats``, the others None. A pending part recorded again (once settled) replaces its
        first record."""
        if key in self._counted:
            chunks, retries, polls = self._counted.pop(key)
            self.pending.pop(key, None)
            self.chunks -= chunks
            self.retries -= retries
            self.polls -= polls
        counts = (1, stats.retries, stats.polls) if stats is not None else (0, 0, 0)
        self.chunks += counts[0]
        self.retries += counts[1]
        self.polls += counts[2]
        if outcome.handle is not None:
            self.handles[key] = outcome.handle
        pending = 0
        if outcome.pending:
            assert outcome.handle is not None
            self.pending[key] = PendingChunk(
                handle=outcome.handle, audience_id=audience_id, ids=tuple(ids)
            )
            self._counted[key] = counts
            pending = len(ids)
        unknown = last_outcome_wins(
            self.failed, self.unknown, ids, failed_now=outcome.failed, unknown_now=outcome.unknown
        )
        applied = 0 if outcome.pending else len(ids) - len(outcome.failed) - len(unknown)
        self.applied += applied
        if not self.listening:
            return
        self.emit(
            ChunkDone(
                chunk=seq,
                size=len(ids),
                applied=applied,
                failed=len(outcome.failed),
                unknown=len(unknown),
                pending=pending,
                applied_total=self.applied,
                failed_total=len(self.failed),
                unknown_total=len(self.unknown),
                operations_read=self.read,
                handle=outcome.handle,
                ids=tuple(ids),
                failed_ids=tuple(outcome.failed),
                unknown_ids=tuple(unknown),
            )
        )

    def result(self, operations: int) -> BulkResult:
        return BulkResult(
            applied=self.applied,
            failed=self.failed,
            unknown=self.unknown,
            pending=tuple(self.pending[key] for key in sorted(self.pending)),
            operations=operations,
            handles=tuple(self.handles[key] for key in sorted(self.handles)),
            chunks=self.chunks,
            retries=self.retries,
            polls=self.polls,
            elapsed=monotonic() - self.start,
        )

    def finish(self, result: BulkResult, *, raise_on_failure: bool) -> BulkResult:
        unconfirmed = [chunk for chunk in result.pending if chunk.handle in self.unconfirmed]
        if unconfirmed:
            causes = {h: e for h, e in self.unconfirmed.items() if e is not None}
            why = (
                f"checking their state failed: {next(iter(causes.values()))}"
                if causes
                else "they were still being applied when the wait ended"
            )
            raise PollTimeoutError(
                f"{len(unconfirmed)} accepted chunk(s), "
                f"{sum(len(c.ids) for c in unconfirmed):,} ids, are not confirmed applied: "
                f"{why}. Nothing is lost: pass this error to the backend's wait() to resume",
                pending=unconfirmed,
                waited=result.elapsed,
                result=result,
                causes=causes,
            )
        if raise_on_failure:
            result.raise_for_failures()
        return result


class _Engine:
    """Runs chunks under bounded concurrency, holding back a chunk that overlaps one in flight.

    A chunk the provider accepted (a ``pending`` outcome) is settled at once with ``wait``;
    without, only when a later chunk touches one of its ids, and is otherwise left pending.
    """

    def __init__(self, *, writer: ChunkWriter[Any], wait: bool, tally: _Tally) -> None:
        self._audience_id = writer.audience_id
        self._writer = writer
        self._wait = wait
        self._slots = anyio.Semaphore(writer.concurrency)
        self._open: list[_Flight] = []  # running, or sent and not yet settled
        self._open_ids: set[str] = set()  # their ids: open flights never share one
        self.tally = tally
        self.crashed: Exception | None = None

    async def dispatch(self, chunk: Chunk, tg: anyio.abc.TaskGroup) -> None:
        """Start ``chunk`` once no earlier unsettled chunk shares an id with it."""
        # Set operations run in C: one test per chunk, and a search only when it overlaps.
        keys = chunk.entries.keys()
        if not self._open_ids.isdisjoint(keys):
            for flight in [f for f in self._open if not f.ids.keys().isdisjoint(keys)]:
                await self._settle_flight(flight)
        await self._slots.acquire()
        flight = _Flight(chunk.seq, chunk.first, chunk.last, CallStats(), dict.fromkeys(keys))
        self._open.append(flight)
        self._open_ids.update(keys)
        if self.tally.listening:
            self.tally.emit(
                ChunkSent(chunk=chunk.seq, size=len(keys), first=chunk.first, last=chunk.last,
                          ids=tuple(keys))
            )  # fmt: skip
        tg.start_soon(self._run, flight, chunk.entries, tg)

    async def _run(
        self, flight: _Flight, entries: Mapping[str, object], tg: anyio.abc.TaskGroup
    ) -> None:
        try:
            flight.parts = await self._send(flight, entries, flight.ids)
            del entries  # only the ids are kept while the write is indexed
            if self._wait:
                for part in flight.parts:
                    await self._settle_part(flight, part)
            if any(part.outcome.pending for part in flight.parts):
                self._record(flight)
            else:
                self._finish(flight)
        except Exception as exc:  # a bug, not a provider failure: stop everything, raise it
            self.crashed = self.crashed or exc
            tg.cancel_scope.cancel()
        finally:
            self._slots.release()
            flight.done.set()

    async def _send(
        self, flight: _Flight, entries: Mapping[str, object], ids: Mapping[str, None]
    ) -> list[_Part]:
        """Send a chunk; when the provider refuses it (400: nothing was applied), split it to
        find the ids it refuses, so that only they fail."""
        tried = await self._attempt(flight, entries, ids)
        if isinstance(tried, _Part):
            return [tried]
        if not self._writer.splittable:
            return [_Part(ids, outcome_of(ids, tried))]
        return await self._narrow(flight, entries, ids, tried, [split_budget(len(ids))])

    async def _attempt(
        self, flight: _Flight, entries: Mapping[str, object], ids: Mapping[str, None]
    ) -> _Part | BadRequestError:
        """Send entries once: what became of them, or the 400 that refused them whole."""
        writer = self._writer
        try:
            outcome = await writer.send(entries, flight.stats)
        except BadRequestError as exc:
            return exc
        except AudienceKitError as exc:
            return _Part(ids, outcome_of(ids, exc))
        if outcome.pending:
            # Reported before anything else can run, so that a caller checkpointing the
            # handle cannot be cancelled before it learns of it.
            assert outcome.handle is not None, "a pending outcome needs its handle"
            if writer.poller is not None:
                writer.poller.issued(outcome.handle)
            self._accepted(flight, ids, outcome)
        return _Part(ids, outcome)

    async def _narrow(
        self,
        flight: _Flight,
        entries: Mapping[str, object],
        ids: Mapping[str, None],
        error: BadRequestError,
        budget: list[int],
    ) -> list[_Part]:
        """Entries refused whole with ``error``: send their halves, and narrow each half
        refused for its own reason down to single ids, while ``budget`` (requests, shared by
        the whole chunk) lasts. Two halves refused for one reason show the refusal is not
        about particular ids: both fail whole."""
        if len(ids) < 2:
            return [_Part(ids, outcome_of(ids, error))]
        keys = list(ids)
        parts: list[_Part] = []
        refused: list[tuple[dict[str, None], dict[str, object], BadRequestError]] = []
        for half in (keys[: len(keys) // 2], keys[len(keys) // 2 :]):
            half_ids = dict.fromkeys(half)
            if budget[0] <= 0:
                parts.append(_Part(half_ids, outcome_of(half_ids, error)))
                continue
            budget[0] -= 1
            sub = {key: entries[key] for key in half}
            tried = await self._attempt(flight, sub, half_ids)
            if isinstance(tried, _Part):
                parts.append(tried)
            else:
                refused.append((half_ids, sub, tried))
        if len(refused) == 2 and _same_reason(refused[0][2], refused[1][2]):
            return [_Part(half_ids, outcome_of(half_ids, why)) for half_ids, _, why in refused]
        for half_ids, sub, why in refused:
            parts += await self._narrow(flight, sub, half_ids, why, budget)
        return parts

    def _accepted(self, flight: _Flight, ids: Mapping[str, None], outcome: ChunkOutcome) -> None:
        assert outcome.handle is not None, "a pending outcome needs the handle to settle it by"
        if not self.tally.listening:
            return
        self.tally.emit(
            ChunkAccepted(chunk=flight.seq, handle=outcome.handle, first=flight.first,
                          last=flight.last, ids=tuple(ids))
        )  # fmt: skip

    async def _settle_part(self, flight: _Flight, part: _Part) -> None:
        """Wait for a pending part with the writer's ``settle``. A part whose state cannot be
        learned (the wait ran out, the checks failed) stays pending with its handle: accepted
        is never turned into failed for want of a confirmation."""
        handle = part.outcome.handle
        if not part.outcome.pending or handle is None:
            return
        self.tally.unconfirmed.pop(handle, None)
        try:
            part.outcome = await self._writer.settle(handle, tuple(part.ids), flight.stats)
        except AudienceKitError as exc:
            part.outcome = self.tally.unconfirmed_outcome(handle, exc)

    async def _settle_flight(self, flight: _Flight) -> None:
        await flight.done.wait()
        if flight.settled:
            return
        for part in flight.parts:
            await self._settle_part(flight, part)
        self._finish(flight)

    def _finish(self, flight: _Flight) -> None:
        flight.settled = True
        self._open.remove(flight)
        self._open_ids.difference_update(flight.ids)
        self._record(flight)

    def _record(self, flight: _Flight) -> None:
        for index, part in enumerate(flight.parts):
            self.tally.record(
                (flight.seq, index), flight.seq, self._audience_id, part.ids, part.outcome,
                flight.stats if index == 0 else None,
            )  # fmt: skip


async def run_bulk(
    ops: Items,
    *,
    writer: ChunkWriter[Any],
    prepare: Preparer | None = None,
    wait: bool = True,
    on_progress: ProgressCallback | None = None,
    raise_on_failure: bool = True,
    bare_ids: bool = False,
    prepare_id: Callable[[str], Operation | str] | None = None,
) -> BulkResult:
    """Apply a stream of operations in chunks and account for every id.

    ``writer`` says how one chunk is checked, encoded and applied. A ``pending`` outcome
    (accepted, not yet applied) is settled with the writer at once when ``wait``; otherwise only
    when a later chunk touches one of its ids, and is else returned in ``BulkResult.pending``.
    ``prepare`` validates (and may normalise) one operation by the provider's rules, raising
    :class:`ValidationError`: a sized input is validated whole with it before anything is sent;
    a stream is checked one chunk at a time by the writer's ``encode``. With
    ``raise_on_failure``, failed or unknown ids raise :class:`PartialFailureError` carrying the
    result; a poll timeout always raises :class:`PollTimeoutError` carrying the handles to resume
    with.

    With ``bare_ids`` (``add_members``), the items are Members, each read as an Add of it, and
    ``str`` ids, each an add of a member with that id and no attributes: checked as a member's
    id is (and, in a sized input, with ``prepare_id``), and handed as it is to a writer that
    ``takes_ids``, without a Member.
    """
    if writer.chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if writer.concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if isinstance(ops, (str, bytes, Mapping)) or not isinstance(ops, (Iterable, AsyncIterable)):
        raise ValidationError(
            [Problem(f"expected an iterable of Add/Remove, got {type(ops).__name__}")]
        )
    checked = isinstance(ops, Collection)
    if isinstance(ops, Collection):  # a sized input is refused whole, before any request
        ops = validate_all(ops, prepare, bare_ids=bare_ids, prepare_id=prepare_id)

    tally = _Tally(on_progress)
    engine = _Engine(writer=writer, wait=wait, tally=tally)
    chunker = _Chunker(writer, checked=checked, bare_ids=bare_ids)
    stopped: Exception | None = None
    async with anyio.create_task_group() as tg:
        # Nothing raised here escapes the task group (it would come out wrapped in an
        # ExceptionGroup): it is kept, the chunks already sent finish, then it is raised.
        try:
            await _pump(ops, chunker, engine, tg)
        except Exception as exc:  # bad input (ValidationError) or the caller's iterator failing
            stopped = exc
        finally:
            if isinstance(ops, AsyncGenerator):
                await ops.aclose()
    if engine.crashed is not None:
        raise engine.crashed
    result = tally.result(chunker.read)
    if isinstance(stopped, ValidationError):
        stopped.result = result
    if stopped is not None:
        raise stopped
    return tally.finish(result, raise_on_failure=raise_on_failure)


#: Operations read between two checkpoints of the pump.
_SLICE = 1024


async def _pump(ops: Items, chunker: _Chunker, engine: _Engine, tg: anyio.abc.TaskGroup) -> None:
    """Feed every operation to the chunker and dispatch each chunk it closes. A function of its
    own, so that the last chunk and operation are freed when it returns, not kept till the end."""
    tally = engine.tally
    if isinstance(ops, AsyncIterable):
        async for op in ops:
            for chunk in chunker.take((op,)):
                tally.read = chunker.read
                await engine.dispatch(chunk, tg)
    else:
        # A slice at a time, with a checkpoint between: reading 10,000 operations takes tens
        # of milliseconds, which would otherwise hold up the requests being sent meanwhile
        # (and late requests bunch up, which a provider's rate limit refuses).
        source = iter(ops)
        while True:
            before = chunker.read
            for chunk in chunker.take(itertools.islice(source, _SLICE)):
                tally.read = chunker.read
                await engine.dispatch(chunk, tg)
            if chunker.read == before:
                break
            await anyio.lowlevel.checkpoint()
    tally.read = chunker.read
    if (rest := chunker.flush()) is not None:
        await engine.dispatch(rest, tg)


async def settle_pending(
    pending: Sequence[PendingChunk],
    *,
    writer_for: Callable[[str], ChunkWriter[Any]],
    concurrency: int,
    on_progress: ProgressCallback | None = None,
    raise_on_failure: bool = True,
) -> BulkResult:
    """Wait for chunks sent earlier (``BulkResult.pending``) and account for their ids.

    ``writer_for(audience_id)`` gives the provider's chunk writer for that audience; ``on_progress``
    hears a :class:`ChunkDone` for each chunk (numbered by its place in ``pending``).
    """
    tally = _Tally(on_progress)
    slots = anyio.Semaphore(concurrency)

    async def one(seq: int, item: PendingChunk) -> None:
        stats = CallStats()
        async with slots:
            try:
                outcome = await writer_for(item.audience_id).settle(item.handle, item.ids, stats)
            except AudienceKitError as exc:
                outcome = tally.unconfirmed_outcome(item.handle, exc)
            tally.record((seq, 0), seq, item.audience_id, item.ids, outcome, stats)

    async with anyio.create_task_group() as tg:
        for seq, item in enumerate(pending):
            tg.start_soon(one, seq, item)
    result = tally.result(sum(len(item.ids) for item in pending))
    return tally.finish(result, raise_on_failure=raise_on_failure)
