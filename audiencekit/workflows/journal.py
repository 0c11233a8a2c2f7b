"""A run's lease and journal: how sync, migrate and the writer keep the state store true.

:func:`guarded` takes the audience's lease in the state store (one writer per audience, across
processes), keeps it alive while the run lasts, and gives a :class:`Journal` that records the
run's writes as they happen: every operation is marked *intended* before it can be sent, each
handle is noted as the provider accepts it, and each write is *settled* once confirmed. The
store is only ever touched from a worker thread, in batches.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
)
from typing import Any, TypeVar

import anyio
import anyio.abc

from ..backend import AudienceBackend
from ..core.clock import monotonic
from ..errors import AudienceBusyError, FencingError, PollTimeoutError, StateStoreError
from ..models import Add, Operation, PendingChunk
from ..progress import ChunkAccepted, ChunkDone, ChunkSent, ProgressCallback, ProgressEvent
from ..state.base import ABSENT, Lease, StateStore, fingerprint, lease_owner, scope_of

__all__ = ["Journal", "guarded", "store_scope"]

T = TypeVar("T")

logger = logging.getLogger("audiencekit.state")

#: Operations marked intended in one transaction before any of them is handed on.
INTENT_BLOCK = 2_000
#: Ids of a listing adopted in one transaction.
ADOPT_BLOCK = 10_000


async def _off_loop(func: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(func, *args)


async def store_scope(store: StateStore, backend: AudienceBackend, scope: str | None) -> str:
    """The scope of ``backend``'s rows in ``store`` (``scope`` when the caller names one), once
    the rows an audiencekit 0.1 store kept for its provider are given to it, if still unclaimed
    (the first account to open such a store takes them)."""
    if scope is not None:
        return scope
    scope = scope_of(backend)
    await _off_loop(store.claim_legacy, backend.provider, scope)
    return scope


class Journal:
    """The journal of one run on one audience under ``lease`` (``scope``: whose rows these are,
    provider and account); every write it makes is fenced by the lease."""

    def __init__(
        self, store: StateStore, scope: str, audience: str, lease: Lease, valid_until: float
    ) -> None:
        self.store = store
        self.scope = scope
        self.audience = audience
        self.lease = lease
        #: Until when (on the one clock) the lease is certainly this run's: no other run can
        #: take it before then, since the store counts its time from a later moment.
        self.valid_until = valid_until
        self._inflight: dict[str, str] = {}  # id -> fingerprint of the write read last
        self._twice: set[str] = set()  # ids read twice in one run: never settled by it
        self._queue: list[tuple[str, Any, Any]] = []
        self._wake = anyio.Event()
        self._flushing = anyio.Lock()  # queued writes reach the store in the order queued
        self._known: dict[str, str] = {}

    async def adopt(self, listed: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Take a listing of the audience as the settled truth: ``listed`` is ``(id,
        (fingerprint, ...))`` in id order (a sorted spill), merged with the journal's entries
        a step at a time; entries the listing lacks are forgotten."""
        store, scope, audience = self.store, self.scope, self.audience

        def merged() -> Iterator[tuple[str, str]]:  # (id, fingerprint or ABSENT), in id order
            entries = store.iter_entries(scope, audience)
            have = next(entries, None)
            for member, record in listed:
                while have is not None and have[0] < member:
                    yield have[0], ABSENT
                    have = next(entries, None)
                if have is not None and have[0] == member:
                    have = next(entries, None)
                yield member, record[0]
            while have is not None:
                yield have[0], ABSENT
                have = next(entries, None)

        rows = merged()

        def step() -> bool:  # in a worker thread: one block of the merge, one transaction
            block = list(itertools.islice(rows, ADOPT_BLOCK))
            present = [(member, fp) for member, fp in block if fp != ABSENT]
            self._record(present, [member for member, fp in block if fp == ABSENT])
            return len(block) == ADOPT_BLOCK

        while await _off_loop(step):
            pass

    async def settle_pending(self, backend: AudienceBackend) -> None:
        """Wait for the writes an earlier run left accepted but unconfirmed (their handles are
        in the journal), so that nothing sent now can be overtaken by them; settle those that
        applied. Only the unsettled entries are held, not the audience."""
        if not backend.capabilities.deferred_writes:
            return
        store, scope, audience = self.store, self.scope, self.audience

        def unsettled() -> dict[str, list[tuple[str, str]]]:  # handle -> (id, fingerprint)
            by_handle: dict[str, list[tuple[str, str]]] = {}
            for member, fp, handle in store.unsettled(scope, audience):
                by_handle.setdefault(handle, []).append((member, fp))
            return by_handle

        by_handle = await _off_loop(unsettled)
        if not by_handle:
            return
        chunks = [PendingChunk(handle=h, audience_id=self.audience, ids=tuple(k for k, _ in rows))
                  for h, rows in by_handle.items()]  # fmt: skip
        try:
            result = await backend.wait(chunks, raise_on_failure=False)
        except PollTimeoutError as exc:  # still unconfirmed: written again, as unknowns are
            if exc.result is None:
                return
            result = exc.result
        missed = {*result.failed, *result.unknown, *(k for c in result.pending for k in c.ids)}
        done = [(k, fp) for rows in by_handle.values() for k, fp in rows if k not in missed]
        present = [(k, fp) for k, fp in done if fp != ABSENT]
        await _off_loop(self._record, present, [k for k, fp in done if fp == ABSENT])

    async def intents(
        self, operations: AsyncIterable[Operation], known: dict[str, str] | None = None
    ) -> AsyncIterator[Operation]:
        """``operations`` as they come, each block marked intended in the store before any
        operation of it is handed on (and so before any of it can be sent). ``known`` holds
        fingerprints already computed for the adds, by id; each is taken out as it is used."""
        self._known = {} if known is None else known
        block: list[Operation] = []
        closing = (
            contextlib.aclosing(operations)
            if isinstance(operations, AsyncGenerator)
            else contextlib.nullcontext()
        )
        async with closing:  # closed with this generator, not left to the garbage collector
            async for op in operations:
                block.append(op)
                if len(block) >= INTENT_BLOCK:
                    await self._intend(block)
                    for ready in block:
                        yield ready
                    block = []
            if block:
                await self._intend(block)
                for ready in block:
                    yield ready

    async def _intend(self, block: list[Operation]) -> None:
        known = self._known

        def intend() -> list[tuple[str, str]]:  # in a worker thread: fingerprints, then write
            writes = [
                (op.id, known.pop(op.id, "") or fingerprint(op.member.attributes))
                if isinstance(op, Add)
                else (op.id, ABSENT)
                for op in block
            ]
            self.store.intend(self.scope, self.audience, writes, fence=self.lease)
            return writes

        inflight, twice = self._inflight, self._twice
        for member, fp in await _off_loop(intend):
            if member in inflight:
                twice.add(member)
            inflight[member] = fp

    def on_event(self, event: ProgressEvent) -> None:
        """Queue what a progress event tells the store; a flusher task writes it. Before a
        chunk is sent, check that the lease is still certainly this run's: a run that was
        paused past it (a stopped process, a stalled host) sends nothing more."""
        if isinstance(event, ChunkSent):
            margin = (self.store.lease_ttl / 4) if math.isfinite(self.store.lease_ttl) else 0.0
            if monotonic() > self.valid_until - margin:
                raise FencingError(
                    self.lease.key,
                    "it was not renewed in time (the run stalled); nothing more is sent",
                )
            return
        if isinstance(event, ChunkAccepted):
            self._queue.append(("accept", event.handle, event.ids))
        elif isinstance(event, ChunkDone) and not event.pending:
            failed, unknown = set(event.failed_ids), set(event.unknown_ids) - set(event.failed_ids)
            present, absent = [], []
            for member in event.ids:
                fp = self._inflight.pop(member, None)
                if fp is None or member in failed or member in unknown or member in self._twice:
                    continue  # stays unsettled: the next run writes it again
                if fp == ABSENT:
                    absent.append(member)
                else:
                    present.append((member, fp))
            if failed:
                self._queue.append(("failed", failed, None))
            if unknown:
                self._queue.append(("unknown", unknown, None))
            self._queue.append(("record", present, absent))
        else:
            return
        self._wake.set()

    def progress(self, also: ProgressCallback | None) -> ProgressCallback:
        """A progress callback that feeds the journal, then ``also``."""

        def both(event: ProgressEvent) -> None:
            self.on_event(event)
            if also is not None:
                also(event)

        return both

    async def flush(self) -> None:
        """Write everything queued (in one worker-thread call)."""
        async with self._flushing:
            queue, self._queue = self._queue, []
            if queue:
                await _off_loop(self._apply, queue)

    def _apply(self, queue: list[tuple[str, Any, Any]]) -> None:
        for kind, first, second in queue:
            if kind == "accept":
                self.store.accept(self.scope, self.audience, first, second, fence=self.lease)
            elif kind == "record":
                self._record(first, second)
            else:  # "failed", "unknown"
                self.store.mark(self.scope, self.audience, kind, first, fence=self.lease)

    def _record(self, present: Iterable[tuple[str, str]], absent: Iterable[str]) -> None:
        self.store.record(
            self.scope, self.audience, present=present, absent=absent, fence=self.lease
        )

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()


@contextlib.asynccontextmanager
async def guarded(store: StateStore, scope: str, audience: str) -> AsyncIterator[Journal]:
    """Hold the audience's lease (for the store's ``lease_ttl``, renewed every third of it)
    and keep a journal while the block runs.

    Raises :class:`~audiencekit.AudienceBusyError` at once when another run holds the lease,
    and :class:`~audiencekit.errors.FencingError` from the block when the lease is lost (the
    run stalled past the lease's time): the store refuses the journal's writes, and no chunk
    is sent once the lease may have run out.
    """
    ttl = store.lease_ttl
    key = f"{scope}:{audience}"
    owner = lease_owner(uuid.uuid4().hex)
    asked = monotonic()
    lease = await _off_loop(store.acquire_lease, key, owner, ttl)
    if not lease.held_by(owner):
        raise AudienceBusyError(key, lease.owner, lease.expires_in)
    journal = Journal(store, scope, audience, lease, asked + ttl)
    failed: Exception | None = None  # what stopped the run from a task: lost lease, store

    async def keep() -> None:  # renew every third of the lease's time; stop the run if lost
        nonlocal failed
        while True:
            await anyio.sleep(ttl / 3 if math.isfinite(ttl) else 3600)
            asked = monotonic()
            try:
                renewed = await _off_loop(store.renew_lease, lease, ttl)
            except StateStoreError as exc:  # tried again next time; until then the lease
                logger.warning("could not renew the lease on %s: %s", key, exc)  # lapses
                continue  # on its own: no chunk is sent once it may have
            if not renewed:
                failed = failed or FencingError(
                    key, "it ran out or changed hands before it was renewed"
                )
                tg.cancel_scope.cancel()
                return
            journal.valid_until = asked + ttl

    async def flush(final: bool = False) -> None:  # a refused or failed write stops the run
        nonlocal failed
        try:
            await (journal.flush() if final else journal._flusher())
        except Exception as exc:  # raised once the tasks are done (not in an ExceptionGroup)
            failed = failed or exc
            tg.cancel_scope.cancel()

    stopped: Exception | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep)
            tg.start_soon(flush)
            try:
                yield journal
            except Exception as exc:  # kept, and raised as it is once the tasks are done (not
                stopped = exc  # wrapped in an ExceptionGroup by the task group)
            finally:
                with anyio.CancelScope(shield=True):
                    await flush(final=True)  # what was confirmed is kept, even on a cancel
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _off_loop(store.release_lease, lease)
    if stopped is not None:
        raise stopped
    if failed is not None:
        raise failed
