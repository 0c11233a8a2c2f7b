"""The rate governor: one request budget per credential, learned from the provider's answers.

Every transport made with one (base URL, credential) in a process draws from the same governor,
so a bulk call's writes, its status polls and anything else sent with those keys share one pace.
The pace starts at the ceiling (the provider's published or reported limit, or the caller's
``rate_limit``), falls when the provider answers 429 and climbs back while it accepts requests
(additive increase, multiplicative decrease). A ``Retry-After`` pauses every request of the budget
for that long (without one, the pause is one interval at the lowered pace).
"""

from __future__ import annotations

import collections
import hashlib
import math
import threading
import weakref

from ._clock import Clock, monotonic

__all__ = ["HEADROOM", "RateGovernor", "forget_governors", "governor_for"]

#: The pace is this fraction of the rate: a provider's token bucket with no burst refuses a
#: request that arrives a millisecond early, and arrival times jitter by more than that.
HEADROOM = 0.95
#: After a refusal, the rate is multiplied by this...
DECREASE = 0.7
#: ...and each accepted request adds this fraction of the ceiling back (or of the rate itself,
#: when there is no ceiling), until the ceiling.
INCREASE = 0.05
#: The slowest the governor goes on its own: one request every 20 seconds.
MIN_RATE = 0.05
_EPSILON = 1e-6
#: How late a sleep may wake (the event loop's timers have about a millisecond's grain).
_TIMER_SLACK = 0.001
#: How many recent sends an unpaced governor remembers to know how fast it was going.
_WINDOW = 32


class RateGovernor:
    """The pace of one credential: :meth:`claim` a slot before each request, then report how it
    went with :meth:`accepted` or :meth:`refused`. Safe to share across tasks and threads."""

    def __init__(self, ceiling: float, *, clock: Clock = monotonic) -> None:
        if not ceiling > 0:
            raise ValueError("ceiling must be a positive number of requests per second")
        self.ceiling = ceiling
        self._clock = clock
        self._lock = threading.Lock()
        #: Requests per second now; None while unpaced (no ceiling and no refusal yet).
        self._rate: float | None = ceiling if math.isfinite(ceiling) else None
        self._next = -math.inf  # the earliest time the next request may go
        self._lowered_at = -math.inf  # when the rate was last lowered
        self._sent: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self.refusals = 0

    def __repr__(self) -> str:
        rate = "unpaced" if self._rate is None else f"{self._rate:.3g}/s"
        return f"<RateGovernor {rate} ceiling={self.ceiling:g}/s>"

    @property
    def rate(self) -> float | None:
        """Requests per second the governor allows now (None: it does not pace at all)."""
        return self._rate

    def claim(self) -> float:
        """Take the next slot when it is due and return 0.0; else return the seconds until it is
        (claim again then: the pace may have changed meanwhile)."""
        with self._lock:
            now = self._clock()
            if self._next - now > _EPSILON:  # (a float clock may stop just short of a slot)
                return self._next - now
            if self._rate is not None:
                # The next slot is one paced interval on. A request sent late (sleeps wake up
                # to a millisecond late) may take back the headroom, or that millisecond: the
                # pace does not drift, and requests never bunch up by more than that.
                paced = 1.0 / (self._rate * HEADROOM)
                catch_up = max(paced - 1.0 / self._rate, _TIMER_SLACK)
                late = now - self._next
                self._next = (self._next if late <= catch_up else now) + paced
            self._sent.append(now)
            return 0.0

    def accepted(self) -> None:
        """A request went through: raise the rate a step, up to the ceiling."""
        with self._lock:
            rate = self._rate
            if rate is None or rate >= self.ceiling:
                return
            step = INCREASE * (self.ceiling if math.isfinite(self.ceiling) else rate)
            self._rate = min(self.ceiling, rate + step)

    def refused(self, sent_at: float, retry_after: float | None) -> None:
        """A request sent at ``sent_at`` was refused (429): lower the rate (once for all the
        requests already on their way when it was last lowered), and send nothing before
        ``retry_after`` seconds, or one interval at the new rate, have passed."""
        with self._lock:
            now = self._clock()
            self.refusals += 1
            if sent_at >= self._lowered_at:
                rate = self._rate if self._rate is not None else self._recent_rate()
                self._rate = max(MIN_RATE, rate * DECREASE)
                self._lowered_at = now
            assert self._rate is not None
            pause = retry_after if retry_after is not None else 1.0 / (self._rate * HEADROOM)
            self._next = max(self._next, now + pause)

    def set_ceiling(self, ceiling: float) -> None:
        """Make ``ceiling`` the highest rate, starting from it when it is finite."""
        with self._lock:
            if ceiling != self.ceiling:
                self.ceiling = ceiling
                self._rate = ceiling if math.isfinite(ceiling) else None

    def _recent_rate(self) -> float:
        """How fast an unpaced governor was sending, from its last sends."""
        sent = self._sent
        if len(sent) < 2 or sent[-1] <= sent[0]:
            return 1.0
        return (len(sent) - 1) / (sent[-1] - sent[0])


_governors: weakref.WeakValueDictionary[tuple[str, str, object], RateGovernor] = (
    weakref.WeakValueDictionary()
)
_registry_lock = threading.Lock()


def governor_for(
    base_url: str, credential: str, ceiling: float, clock: Clock = monotonic
) -> RateGovernor:
    """The governor of ``credential`` at ``base_url`` in this process (made on first use).

    Only a hash of the credential is kept. Transports with their own ``clock`` (tests) get a
    governor of their own, since a pace is a position on one clock. A budget has one ceiling:
    the last transport made with a different one sets it.
    """
    digest = hashlib.sha256(credential.encode()).hexdigest()
    key = (base_url, digest, clock)
    with _registry_lock:
        governor = _governors.get(key)
        if governor is None:
            governor = RateGovernor(ceiling, clock=clock)
            _governors[key] = governor
        else:
            governor.set_ceiling(ceiling)
        return governor


def forget_governors() -> None:
    """Forget every budget learned so far (for test suites that reuse one server)."""
    with _registry_lock:
        _governors.clear()
