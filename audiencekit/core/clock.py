"""The one clock and the one sleep of the library, chosen here and nowhere else.

Every pace, send time, wait and deadline is read on :func:`monotonic` unless a caller passes a
``clock`` of its own (tests), and every wait sleeps with :data:`DEFAULT_SLEEP`. Not the event
loop's clock: trio's has an offset of its own in each run, so a pace kept on one clock and a
send timed on the other disagree; and a budget shared by the processes of a host needs a clock
they all read alike.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["DEFAULT_SLEEP", "Clock", "Sleep", "monotonic"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def monotonic() -> float:
    """Seconds on the host's monotonic clock (the same in every thread, loop and process)."""
    return time.monotonic()


#: Sleeps last seconds of :func:`monotonic` too: anyio's sleep is measured in the same seconds.
DEFAULT_SLEEP: Sleep = anyio.sleep
