"""Waiting for a provider to reach a state: an interval that backs off, and a hard deadline."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ..errors import PollTimeoutError
from .clock import DEFAULT_SLEEP, Clock, Sleep, monotonic
from .stats import CallStats

if TYPE_CHECKING:
    from ..models import PendingChunk

__all__ = ["DelayLearner", "PollPolicy", "Polled", "Poller", "wait_until"]

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
    #: When the last probe that found the state not reached yet was made, from the start of
    #: the wait (None: the first probe found it).
    last_miss: float | None = None


class DelayLearner:
    """Learns how long a provider takes to apply a write, from the waits before, so that the
    first probe of the next write comes when it is likely done: one probe a write, mostly.

    The guess moves up to the middle of the last wait's bounds (the last probe that missed,
    the answer of the one that hit: ``waited``) when a write took longer, and creeps down while
    first probes hit.
    """

    def __init__(self) -> None:
        self.guess = 0.0

    def learn(self, polled: Polled[Any]) -> None:
        if polled.last_miss is None:
            self.guess = min(self.guess, polled.waited) * 0.99
        else:
            self.guess = max(self.guess, (polled.last_miss + polled.waited) / 2)


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    policy: PollPolicy,
    pending: Callable[[], Sequence[PendingChunk | str]],
    sleep: Sleep = DEFAULT_SLEEP,
    clock: Clock = monotonic,
    stats: CallStats | None = None,
    first_delay: float = 0.0,
    since: float | None = None,
) -> Polled[T]:
    """Call ``probe`` after each wait until it returns something other than None.

    The first probe comes after one ``interval``, or ``first_delay`` when longer (what the
    provider took last time: a probe that is sure to miss is a wasted request); the last comes
    at the deadline. If that one still returns None, :class:`PollTimeoutError` is raised with
    ``pending()``, the handles to resume. ``since`` (a ``clock()`` time) is when the awaited
    thing began, when earlier than now.
    """
    start = clock() if since is None else since
    deadline = start + policy.max_wait
    delay = max(policy.interval, first_delay - (clock() - start))
    probes = 0
    last_miss: float | None = None
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            items = tuple(pending())
            handles = [item if isinstance(item, str) else item.handle for item in items]
            raise PollTimeoutError(
                f"still pending after {policy.max_wait:g}s ({probes} probes): "
                + ", ".join(handles[:10])
                + (f" and {len(handles) - 10} more" if len(handles) > 10 else ""),
                pending=items,
                waited=clock() - start,
            )
        await sleep(min(delay, remaining))
        probes += 1
        if stats is not None:
            stats.polls += 1
        asked = clock() - start
        value = await probe()
        if value is not None:
            return Polled(value, probes, clock() - start, last_miss)
        last_miss = asked
        delay = min(max(delay * policy.backoff, first_delay / 4), policy.max_interval)


class Poller:
    """Waits for a provider's accepted writes, one handle at a time, under one policy: the
    first check of a handle comes once the apply time learned from the writes before it has
    passed since the handle was issued (see :class:`DelayLearner`).

    A backend keeps one, so that what it learns carries over from call to call; the bulk engine
    notes when each handle is issued, and a writer's ``settle`` waits with it.
    """

    #: Issue times kept at most (the oldest are forgotten first).
    KEPT = 4096

    def __init__(
        self,
        policy: PollPolicy,
        *,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy
        self._sleep = sleep or DEFAULT_SLEEP
        self._clock = clock or monotonic
        self._learner = DelayLearner()
        self._issued: dict[str, float] = {}

    def issued(self, handle: str) -> None:
        """Note that ``handle`` was issued now (its apply time is measured from then)."""
        issued = self._issued
        issued[handle] = self._clock()
        if len(issued) > self.KEPT:
            del issued[next(iter(issued))]

    async def wait(
        self,
        probe: Callable[[], Awaitable[T | None]],
        *,
        handle: str,
        pending: Callable[[], Sequence[PendingChunk | str]] | None = None,
        stats: CallStats | None = None,
    ) -> T:
        """Call ``probe`` until it returns something other than None, and return that. A
        timeout raises :class:`PollTimeoutError` carrying ``pending()`` (default: the handle)."""
        since = self._issued.pop(handle, None)
        polled = await wait_until(
            probe,
            policy=self.policy,
            pending=pending or (lambda: [handle]),
            sleep=self._sleep,
            clock=self._clock,
            stats=stats,
            first_delay=self._learner.guess if since is not None else 0.0,
            since=since,
        )
        if since is not None:
            self._learner.learn(polled)
        return polled.value
