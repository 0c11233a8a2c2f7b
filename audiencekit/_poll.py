"""Waiting for a provider to reach a state: an interval that backs off, and a hard deadline."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import attrs

from ._http import CallStats
from .errors import PollTimeoutError

__all__ = ["PollPolicy", "Polled", "wait_until"]

T = TypeVar("T")


def _positive_finite(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive, finite number of seconds")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How to wait: first ``interval`` seconds, then ``backoff`` times longer each time, never more
    than ``max_interval``, and never past ``max_wait`` in all (there is no way to wait forever)."""

    max_wait: float = attrs.field(validator=_positive_finite)
    interval: float = attrs.field(default=0.25, validator=_positive_finite)
    backoff: float = attrs.field(default=1.5, validator=attrs.validators.ge(1.0))
    max_interval: float = attrs.field(default=5.0, validator=_positive_finite)


@attrs.frozen
class Polled(Generic[T]):
    """The value a wait ended with, how many probes it took and how long it waited."""

    value: T
    probes: int
    waited: float


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    policy: PollPolicy,
    pending: Callable[[], Sequence[str]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = anyio.current_time,
    stats: CallStats | None = None,
) -> Polled[T]:
    """Call ``probe`` after each wait until it returns something other than None.

    The first probe comes after one ``interval`` (a provider rarely finishes at once, and a probe
    that is sure to fail is a wasted request); the last comes at the deadline. If that one still
    returns None, :class:`PollTimeoutError` is raised with ``pending()``, the handles to resume.
    """
    start = clock()
    deadline = start + policy.max_wait
    delay = policy.interval
    probes = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            handles = tuple(pending())
            raise PollTimeoutError(
                f"still pending after {policy.max_wait:g}s ({probes} probes): "
                + ", ".join(handles[:10])
                + (f" and {len(handles) - 10} more" if len(handles) > 10 else ""),
                pending=handles,
                waited=clock() - start,
            )
        await sleep(min(delay, remaining))
        probes += 1
        if stats is not None:
            stats.polls += 1
        value = await probe()
        if value is not None:
            return Polled(value, probes, clock() - start)
        delay = min(delay * policy.backoff, policy.max_interval)
