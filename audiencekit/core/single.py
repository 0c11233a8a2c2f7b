"""Helpers for providers that write one member per request (Dexatel): a chunk fanned out to
concurrent requests, and a create that is not safe to replay made exactly once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import anyio

from ..errors import AudienceKitError, may_have_taken_effect
from ..models import Operation
from .chunkwriter import ChunkOutcome

__all__ = ["create_once", "fan_out"]

T = TypeVar("T")


async def fan_out(
    ops: Mapping[str, Operation],
    apply_one: Callable[[Operation], Awaitable[object]],
    *,
    limit: int,
) -> ChunkOutcome:
    """Apply the operations of a chunk one request (or a few) each, at most ``limit`` at once,
    for providers without a bulk call; an operation that raises lands in failed or unknown."""
    failed: dict[str, AudienceKitError] = {}
    unknown: dict[str, AudienceKitError] = {}
    limiter = anyio.CapacityLimiter(limit)

    async def one(op: Operation) -> None:
        async with limiter:
            try:
                await apply_one(op)
            except AudienceKitError as exc:
                (unknown if may_have_taken_effect(exc) else failed)[op.id] = exc

    async with anyio.create_task_group() as tg:
        for op in ops.values():
            tg.start_soon(one, op)
    return ChunkOutcome(failed=failed, unknown=unknown)


async def create_once(
    create: Callable[[], Awaitable[T]],
    find: Callable[[], Awaitable[T | None]],
    *,
    attempts: int = 3,
    pause: Callable[[int], Awaitable[None]] | None = None,
) -> T:
    """Create something that must exist once, with a call that is not safe to replay.

    After a failure that may have taken effect, look it up before anything else: found, it is
    the result; not found, the create is sent again (after ``pause(attempt)``, the transport's
    backoff), ``attempts`` times in all. The error of the last attempt is raised only if a last
    lookup does not find it either.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await create()
        except AudienceKitError as exc:
            if not may_have_taken_effect(exc):
                raise
            found = await find()
            if found is not None:
                return found
            if attempt == attempts:
                raise
        if pause is not None:
            await pause(attempt - 1)
    raise AssertionError("unreachable")  # pragma: no cover
