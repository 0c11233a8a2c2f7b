"""``AudienceWriter``: many tasks write members; few bulk calls go out.

For long-running services: ``await writer.add(member)`` from anywhere, and the writer coalesces
the operations into bulk calls by size (``max_batch``) and time (``max_delay``). The queue is
bounded (``max_queue``), so a writer that cannot keep up slows its callers down instead of
growing. Failures are never only logged: they raise from :meth:`flush` and on exit.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._resolve import resolve_audience
from .backend import AudienceBackend
from .errors import AudienceKitError, PartialFailureError
from .models import Add, BulkResult, Member, Operation, Remove

__all__ = ["AudienceWriter"]


@attrs.frozen
class _Flush:
    done: anyio.Event


class AudienceWriter:
    """Buffers membership changes for one audience (given by id or by name) and applies them
    in bulk.

    Use it as an async context manager: leaving the block flushes everything, then raises
    :class:`~audiencekit.PartialFailureError` if any id failed along the way (``failed`` and
    ``unknown`` hold them, last outcome per id). ``on_result`` hears every bulk call's result.
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
    ) -> None:
        if max_batch < 1 or max_queue < 1 or not max_delay > 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_delay positive")
        self.backend = backend
        self.audience_id = audience_id
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.on_result = on_result
        self.failed: dict[str, AudienceKitError] = {}
        self.unknown: dict[str, AudienceKitError] = {}
        self.applied = 0
        self.calls = 0
        self.max_queue = max_queue
        self._send: MemoryObjectSendStream[Operation | _Flush] | None = None
        self._receive: MemoryObjectReceiveStream[Operation | _Flush] | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._crashed: BaseException | None = None

    def __repr__(self) -> str:
        return f"<AudienceWriter {self.backend.provider}:{self.audience_id} applied={self.applied}>"

    async def __aenter__(self) -> AudienceWriter:
        if self._group is not None:
            raise RuntimeError("an AudienceWriter can be entered once")
        found, _ = await resolve_audience(self.backend, self.audience_id)
        self.audience_id = found.id
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
        await self._send.aclose()  # the loop drains what is queued, then ends
        await self._group.__aexit__(None, None, None)
        if self._crashed is not None:
            raise self._crashed
        if exc is None:
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
        since the last flush."""
        done = anyio.Event()
        await self._enqueue(_Flush(done))
        await done.wait()
        if self._crashed is not None:
            raise self._crashed
        self._raise_failures()

    async def _enqueue(self, item: Operation | _Flush) -> None:
        if self._send is None:
            raise RuntimeError("use the writer in 'async with': it has no running loop yet")
        try:
            await self._send.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise RuntimeError("the writer has stopped") from self._crashed

    def _raise_failures(self) -> None:
        if self.failed or self.unknown:
            result = BulkResult(applied=self.applied, failed=self.failed, unknown=self.unknown)
            self.failed, self.unknown = {}, {}
            raise PartialFailureError(result)

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._receive is not None
        try:
            async with self._receive:
                while True:
                    batch, flushes, closed = await self._collect()
                    if batch:
                        await self._apply(batch)
                    for flush in flushes:
                        flush.done.set()
                    if closed:
                        return
        except Exception as exc:  # surfaced by the next call, and on exit
            self._crashed = exc

    async def _collect(self) -> tuple[list[Operation], list[_Flush], bool]:
        """Wait for an operation, then take more until the batch is full, the delay is over,
        a flush is asked for, or the writer is closed."""
        receive = self._receive
        assert receive is not None
        batch: list[Operation] = []
        flushes: list[_Flush] = []
        try:
            first = await receive.receive()
        except anyio.EndOfStream:
            return batch, flushes, True
        if isinstance(first, _Flush):
            return batch, [first], False
        batch.append(first)
        with anyio.move_on_after(self.max_delay):
            while len(batch) < self.max_batch:
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    return batch, flushes, True
                if isinstance(item, _Flush):
                    flushes.append(item)
                    break
                batch.append(item)
        return batch, flushes, False

    async def _apply(self, batch: list[Operation]) -> None:
        result = await self.backend.apply(self.audience_id, batch, raise_on_failure=False)
        self.calls += 1
        self.applied += result.applied
        for op in batch:
            self.failed.pop(op.id, None)
            self.unknown.pop(op.id, None)
        self.failed.update(result.failed)
        self.unknown.update(result.unknown)
        if self.on_result is not None:
            self.on_result(result)
