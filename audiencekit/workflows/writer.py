"""``AudienceWriter``: many tasks write members; few bulk calls go out.

For long-running services: ``await writer.add(member)`` from anywhere, and the writer coalesces
the operations into bulk calls by size (``max_batch``) and time (``max_delay``). The queue is
bounded (``max_queue``), so a writer that cannot keep up slows its callers down instead of
growing. Failures are never only logged: they raise from :meth:`~AudienceWriter.flush` and on
exit, and no queued operation is ever dropped without being handed back.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..backend import AudienceBackend
from ..core.bulk import last_outcome_wins
from ..core.resolve import resolve_audience
from ..errors import AudienceKitError, PartialFailureError, WriterStoppedError
from ..models import Add, BulkResult, Member, Operation, Remove
from ..state import StateStore
from .apply import apply
from .journal import Journal, guarded, store_scope

__all__ = ["AudienceWriter"]

logger = logging.getLogger("audiencekit")


@attrs.frozen
class _Flush:
    done: anyio.Event


class _Cancelled(AudienceKitError):
    """The outcome of operations whose bulk call was cancelled: they may have been applied."""


class AudienceWriter:
    """Buffers membership changes for one audience (given by id or by name) and applies them
    in bulk.

    Use it as an async context manager; leaving the block sends everything queued, then raises
    :class:`~audiencekit.PartialFailureError` if any id failed along the way (``failed`` and
    ``unknown`` hold them, last outcome per id). ``on_result`` hears every bulk call's result.
    With a ``state`` store, the writer holds the audience's lease while it is open (a sync or
    another writer of the audience raises :class:`~audiencekit.AudienceBusyError`) and journals
    what it writes, as ``sync`` does.

    The shutdown contract: every operation put is sent, or handed back in ``unsent``.

    - A bulk call that raises (a :class:`~audiencekit.PollTimeoutError`, say) stops the writer:
      what was queued behind it is not sent but moved to ``unsent``, every waiting
      :meth:`flush` returns, and the next call (and the exit) raises
      :class:`~audiencekit.errors.WriterStoppedError` with ``unsent`` and the error as its cause.
    - When the block raises, what was queued is still sent; if some ids fail, the exit raises
      :class:`~audiencekit.PartialFailureError` (the block's exception is its ``__context__``).
    - When the block is cancelled, nothing more is sent: queued operations are moved to
      ``unsent``, those of the bulk call cut short to ``unknown``, and a warning says so.
    """

    def __init__(
        self,
        backend: AudienceBackend,
        audience_id: str,
        *,
        max_batch: int = 1_000,
        max_delay: float = 1.0,
        max_queue: int = 10_000,
        on_result: Callable[[BulkResult], None] | None = None,
        state: StateStore | None = None,
        scope: str | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or not max_delay > 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_delay positive")
        self.backend = backend
        self.audience_id = audience_id
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.on_result = on_result
        self.state = state
        self.scope = scope
        self.failed: dict[str, AudienceKitError] = {}
        self.unknown: dict[str, AudienceKitError] = {}
        #: Operations put but never sent (the writer stopped, or was cancelled), in order.
        self.unsent: list[Operation] = []
        self.applied = 0
        self.calls = 0
        self.max_queue = max_queue
        self._send: MemoryObjectSendStream[Operation | _Flush] | None = None
        self._receive: MemoryObjectReceiveStream[Operation | _Flush] | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._guard: contextlib.AsyncExitStack | None = None
        self._journal: Journal | None = None
        self._stopped: WriterStoppedError | None = None

    def __repr__(self) -> str:
        return f"<AudienceWriter {self.backend.provider}:{self.audience_id} applied={self.applied}>"

    async def __aenter__(self) -> AudienceWriter:
        if self._guard is not None:
            raise RuntimeError("an AudienceWriter can be entered once")
        self._guard = contextlib.AsyncExitStack()
        found, _ = await resolve_audience(self.backend, self.audience_id)
        self.audience_id = found.id
        if self.state is not None:
            self._journal = await self._guard.enter_async_context(
                guarded(
                    self.state,
                    await store_scope(self.state, self.backend, self.scope),
                    self.audience_id,
                )
            )
        self._send, self._receive = anyio.create_memory_object_stream[Operation | _Flush](
            self.max_queue
        )
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        assert self._send is not None
        assert self._guard is not None
        cancelled = exc is not None and isinstance(exc, anyio.get_cancelled_exc_class())
        try:
            self._send.close()  # the loop drains what is queued, then ends
            if cancelled:
                self._group.cancel_scope.cancel()
            await self._group.__aexit__(None, None, None)
        finally:
            try:
                await self._guard.aclose()
            finally:
                if cancelled and (self.unsent or self.unknown):
                    logger.warning(
                        "%r cancelled: %d operation(s) not sent (writer.unsent), %d cut short "
                        "(writer.unknown)",
                        self,
                        len(self.unsent),
                        len(self.unknown),
                    )
        if cancelled:
            return
        if self._stopped is not None:
            raise self._stopped
        self._raise_failures()

    # -- writing -------------------------------------------------------------------------------

    async def add(self, member: Member) -> None:
        """Queue an add (an upsert); bad input raises here, before it is queued."""
        await self.put(Add(member))

    async def remove(self, member_id: str) -> None:
        """Queue a removal."""
        await self.put(Remove(member_id))

    async def put(self, operation: Operation) -> None:
        """Queue an operation, waiting while the queue is full."""
        operation = self.backend.prepare(operation)
        await self._enqueue(operation)

    async def flush(self) -> None:
        """Apply everything queued so far; raise :class:`PartialFailureError` if anything failed
        since the last flush (:class:`WriterStoppedError` once the writer has stopped)."""
        done = anyio.Event()
        await self._enqueue(_Flush(done))
        await done.wait()
        if self._stopped is not None:
            raise self._stopped
        self._raise_failures()

    async def _enqueue(self, item: Operation | _Flush) -> None:
        if self._send is None:
            raise RuntimeError("use the writer in 'async with': it has no running loop yet")
        if self._stopped is not None:
            raise self._stopped
        try:
            await self._send.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            stopped = self._stopped
        else:
            return
        if stopped is not None:
            raise stopped
        raise RuntimeError("the writer is closed")

    def _raise_failures(self) -> None:
        if self.failed or self.unknown:
            result = BulkResult(applied=self.applied, failed=self.failed, unknown=self.unknown)
            self.failed, self.unknown = {}, {}
            raise PartialFailureError(result)

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._receive is not None
        batch: list[Operation] = []
        flushes: list[_Flush] = []
        sending = False
        try:  # the receiving end is closed by _drain, once what is left was handed back
            while True:
                batch, flushes = [], []
                closed = await self._collect(batch, flushes)
                if batch:
                    sending = True
                    await self._apply(batch)
                    sending = False
                batch = []
                for flush in flushes:
                    flush.done.set()
                if closed:
                    return
        except anyio.get_cancelled_exc_class():
            if sending:  # cut short mid-call: they may have been applied
                cut = _Cancelled("the writer was cancelled while this operation was being applied")
                self.unknown.update((op.id, cut) for op in batch)
            else:  # taken from the queue, not sent yet
                self.unsent.extend(batch)
            raise
        except Exception as exc:  # raised by the next call, and on exit
            self._stopped = WriterStoppedError(exc, unsent=())
            self._stopped.__cause__ = exc
        finally:
            for flush in flushes:  # a flush waiting on the batch that failed returns too
                flush.done.set()
            self._drain()
            if self._stopped is not None:
                self._stopped.unsent = tuple(self.unsent)

    def _drain(self) -> None:
        """Hand back what is still queued (into ``unsent``) and release every waiting flush."""
        receive = self._receive
        assert receive is not None
        while True:
            try:
                item = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if isinstance(item, _Flush):
                item.done.set()
            else:
                self.unsent.append(item)
        receive.close()

    async def _collect(self, batch: list[Operation], flushes: list[_Flush]) -> bool:
        """Wait for an operation, then take more into ``batch`` until it is full, the delay is
        over, a flush is asked for (into ``flushes``), or the writer is closed (True). The
        lists are the caller's, so that what was taken is never lost to a cancel."""
        receive = self._receive
        assert receive is not None
        try:
            first = await receive.receive()
        except anyio.EndOfStream:
            return True
        if isinstance(first, _Flush):
            flushes.append(first)
            return False
        batch.append(first)
        with anyio.move_on_after(self.max_delay):
            while len(batch) < self.max_batch:
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    return True
                if isinstance(item, _Flush):
                    flushes.append(item)
                    break
                batch.append(item)
        return False

    async def _apply(self, batch: list[Operation]) -> None:
        result = await apply(self.backend, self.audience_id, batch, self._journal)
        self.calls += 1
        self.applied += result.applied
        last_outcome_wins(self.failed, self.unknown, (op.id for op in batch),
                          failed_now=result.failed, unknown_now=result.unknown)  # fmt: skip
        if self.on_result is not None:
            self.on_result(result)
