"""Waiting with backoff and a hard deadline."""

from __future__ import annotations

import pytest

from audiencekit import PollTimeoutError
from audiencekit.core.poll import wait_until
from audiencekit.core.stats import CallStats
from audiencekit.options import PollPolicy

from .support import FakeClock

pytestmark = pytest.mark.anyio


async def test_returns_the_first_value_with_the_probe_count() -> None:
    clock = FakeClock()
    answers = iter([None, None, "APPLIED"])
    stats = CallStats()

    async def probe() -> str | None:
        return next(answers)

    polled = await wait_until(
        probe,
        policy=PollPolicy(max_wait=60, interval=1.0, backoff=2.0, max_interval=3.0),
        pending=lambda: ["t1"],
        sleep=clock.sleep,
        clock=clock,
        stats=stats,
    )
    assert polled.value == "APPLIED"
    assert polled.probes == 3
    assert stats.polls == 3
    assert clock.sleeps == [1.0, 2.0, 3.0]  # interval, backed off, capped at max_interval
    assert polled.waited == 6.0


async def test_the_deadline_raises_with_what_is_pending() -> None:
    clock = FakeClock()
    probes = 0

    async def probe() -> str | None:
        nonlocal probes
        probes += 1
        return None

    with pytest.raises(PollTimeoutError) as caught:
        await wait_until(
            probe,
            policy=PollPolicy(max_wait=10, interval=1.0, backoff=2.0, max_interval=4.0),
            pending=lambda: ["tokA", "tokB"],
            sleep=clock.sleep,
            clock=clock,
        )
    assert caught.value.handles == ("tokA", "tokB")
    assert caught.value.pending == ()  # bare handles are no chunks to wait() for
    assert isinstance(caught.value, TimeoutError)
    # waits 1, 2, 4, 3 (the rest up to the deadline), probing after each, then gives up
    assert clock.sleeps == [1.0, 2.0, 4.0, 3.0]
    assert probes == 4
    assert clock.now == 10.0
    assert caught.value.waited == 10.0
    assert "tokA" in str(caught.value)


async def test_a_success_on_the_last_probe_at_the_deadline_counts() -> None:
    clock = FakeClock()

    async def probe() -> str | None:
        return "done" if clock.now >= 5.0 else None

    polled = await wait_until(
        probe,
        policy=PollPolicy(max_wait=5, interval=2.0, backoff=1.0),
        pending=lambda: ["t"],
        sleep=clock.sleep,
        clock=clock,
    )
    assert polled.value == "done"
    assert clock.sleeps == [2.0, 2.0, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_wait": 0},
        {"max_wait": -1},
        {"max_wait": float("inf")},
        {"max_wait": float("nan")},
        {"max_wait": 5, "interval": 0},
        {"max_wait": 5, "backoff": 0.5},
        {"max_wait": 5, "max_interval": 0},
    ],
)
def test_a_policy_without_a_real_deadline_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        PollPolicy(**kwargs)


def test_max_wait_is_mandatory() -> None:
    with pytest.raises(TypeError):
        PollPolicy()  # type: ignore[call-arg]
