"""The rate governor: one shared, adaptive budget per credential; 429s retried by time."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from audiencekit import RateLimitError
from audiencekit.core.poll import DelayLearner, PollPolicy, wait_until
from audiencekit.core.rate import DECREASE, HEADROOM, RateGovernor, governor_for
from audiencekit.core.stats import CallStats
from audiencekit.core.transport import Transport, parse_retry_after
from audiencekit.errors import ErrorDetail, InternalServerError
from audiencekit.options import RetryPolicy

from .support import FakeClock

pytestmark = pytest.mark.anyio

BASE = "https://rate.example.test/v1"


def parse_error(response: httpx.Response, body: Any) -> ErrorDetail:
    return ErrorDetail(str(body))


def make(clock: FakeClock, **options: Any) -> Transport:
    settings: dict[str, Any] = {
        "provider": "example",
        "base_url": BASE,
        "auth_headers": {"X-Key": "secret-key-123"},
        "parse_error": parse_error,
        "sleep": clock.sleep,
        "clock": clock,
        "rng": random.Random(1),
    }
    return Transport(**(settings | options))


# -- the governor alone ---------------------------------------------------------------------


def test_a_refusal_halves_the_rate_and_successes_bring_it_back() -> None:
    clock = FakeClock()
    governor = RateGovernor(2.0, clock=clock)
    assert governor.claim() == 0.0
    governor.refused(clock.now, None)
    assert governor.rate == pytest.approx(2.0 * DECREASE)
    # refusals of requests sent before the rate was lowered do not lower it again
    governor.refused(clock.now - 0.5, None)
    assert governor.rate == pytest.approx(2.0 * DECREASE)
    for _ in range(40):
        governor.accepted()
    assert governor.rate == pytest.approx(2.0)  # back to the ceiling, never past it


def test_requests_woken_late_do_not_slow_the_pace_nor_bunch_up() -> None:
    """A sleep wakes late (here 3 ms): the pace takes back its headroom, so lateness does not
    add up over many requests, and no two sends are closer than one interval of the limit."""
    clock = FakeClock()
    governor = RateGovernor(10.0, clock=clock)
    sent: list[float] = []
    for _ in range(100):
        while (wait := governor.claim()) > 0:
            clock.now += wait + 0.003
        sent.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.1 - 1e-9  # never closer than 1/rate
    assert sent[-1] <= 99 * 0.1 / HEADROOM + 0.01  # the paced interval, not interval + 3 ms


def test_retry_after_pauses_every_request_of_the_budget() -> None:
    clock = FakeClock()
    governor = RateGovernor(10.0, clock=clock)
    assert governor.claim() == 0.0
    governor.refused(clock.now, 7.0)
    assert governor.claim() == pytest.approx(7.0)
    clock.now += 7.0
    assert governor.claim() == 0.0


def test_an_unpaced_governor_starts_pacing_below_the_rate_that_was_refused() -> None:
    clock = FakeClock()
    governor = RateGovernor(float("inf"), clock=clock)
    for _ in range(21):  # 20 requests a second
        assert governor.claim() == 0.0
        clock.now += 0.05
    assert governor.rate is None
    governor.refused(clock.now, None)
    assert governor.rate == pytest.approx(20.0 * DECREASE)


def test_one_governor_per_base_url_and_credential() -> None:
    first = governor_for("https://a.test", "project-1", 1.0)
    assert governor_for("https://a.test", "project-1", 1.0) is first
    assert first.ceiling == 1.0
    assert governor_for("https://a.test", "project-1", 5.0) is first
    assert first.ceiling == 5.0  # the last one made sets the ceiling of the budget
    assert first.rate == 5.0
    assert governor_for("https://a.test", "project-2", 1.0) is not first
    assert governor_for("https://b.test", "project-1", 1.0) is not first
    assert "project-1" not in repr(first)


# -- the transport with a governor ----------------------------------------------------------


@respx.mock
async def test_transports_of_one_credential_share_one_pace() -> None:
    clock = FakeClock()
    respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(200))
    sent: list[float] = []
    async with (
        make(clock, rate_limit=2.0, rate_scope="project-x") as one,
        make(clock, rate_limit=2.0, rate_scope="project-x", auth_headers={"X-Key": "other"}) as two,
        make(clock, rate_limit=2.0, rate_scope="project-y") as three,
    ):
        assert one.governor is two.governor
        assert one.governor is not three.governor
        for transport in (one, two, one, two):
            await transport.request("GET", "/thing", replay_safe=True)
            sent.append(clock.now)
        await three.request("GET", "/thing", replay_safe=True)
        assert clock.now == sent[-1]  # another project: its own budget, no wait
    step = 1 / (2.0 * HEADROOM)
    assert sent == pytest.approx([0.0, step, 2 * step, 3 * step])


@respx.mock
async def test_a_429_is_retried_until_the_deadline_not_for_a_count() -> None:
    clock = FakeClock()
    route = respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(429))
    stats = CallStats()
    async with make(
        clock, retry=RetryPolicy(max_retries=0, rate_limit_timeout=120.0), rate_limit=1.0
    ) as transport:
        with pytest.raises(RateLimitError):
            await transport.request("GET", "/thing", replay_safe=True, stats=stats)
    assert route.call_count > 5  # max_retries=0 does not stop a refused request
    assert 120.0 <= clock.now <= 150.0
    assert stats.retries == route.call_count - 1


@respx.mock
async def test_a_refused_request_goes_through_once_the_provider_accepts_again() -> None:
    clock = FakeClock()
    route = respx.get(f"{BASE}/thing").mock(
        side_effect=[httpx.Response(429)] * 12 + [httpx.Response(200)]
    )
    async with make(clock, retry=RetryPolicy(max_retries=1), rate_limit=1.0) as transport:
        response = await transport.request("GET", "/thing", replay_safe=True)
    assert response.status_code == 200
    assert route.call_count == 13


@respx.mock
async def test_other_errors_keep_their_count() -> None:
    clock = FakeClock()
    route = respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(503))
    async with make(clock, retry=RetryPolicy(max_retries=2)) as transport:
        with pytest.raises(InternalServerError):
            await transport.request("GET", "/thing", replay_safe=True)
    assert route.call_count == 3


@respx.mock
async def test_a_retry_after_longer_than_the_deadline_is_not_waited_for() -> None:
    clock = FakeClock()
    route = respx.get(f"{BASE}/thing").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "100"})
    )
    async with make(clock, retry=RetryPolicy(rate_limit_timeout=60.0)) as transport:
        with pytest.raises(RateLimitError) as caught:
            await transport.request("GET", "/thing", replay_safe=True)
    assert route.call_count == 1
    assert caught.value.retry_after == 100.0


@respx.mock
async def test_without_a_governor_nothing_is_paced() -> None:
    clock = FakeClock()
    respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(200))
    async with make(clock, rate_limit=None) as transport:
        assert transport.governor is None
        for _ in range(10):
            await transport.request("GET", "/thing", replay_safe=True)
    assert clock.now == 0.0


async def test_a_cancel_is_prompt_while_a_refused_request_waits() -> None:
    """Only the exchange itself is shielded: waiting between tries ends at once on a cancel."""
    with respx.mock:
        respx.post(f"{BASE}/write").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "30"})
        )
        async with Transport(
            provider="example",
            base_url=BASE,
            auth_headers={"X-Key": "secret-key-123"},
            parse_error=parse_error,
            retry=RetryPolicy(max_retry_after=60),
        ) as transport:
            start = anyio.current_time()
            with anyio.move_on_after(0.2):
                await transport.request("POST", "/write", replay_safe=True, content=b"{}")
            assert anyio.current_time() - start < 1.0


# -- Retry-After, parsed safely -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Mon, 01 Jan 99999999999 00:00:00 GMT",
        "Mon, 01 Jan 0000 00:00:00 GMT",
        "Fri, 99 Foo 2020 99:99:99 +9999",
        "1e400",
        "-inf",
        "nan",
        "\x00",
    ],
)
def test_absurd_retry_after_values_are_ignored_or_clamped(header: str) -> None:
    value = parse_retry_after(header)
    assert value is None or value >= 0.0


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(header: str) -> None:
    value = parse_retry_after(header, now=datetime(2026, 11, 29, tzinfo=timezone.utc))
    assert value is None or 0.0 <= value < float("inf")


def test_a_far_future_date_is_a_long_wait_not_an_error() -> None:
    when = datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(when, usegmt=True)) > 1e10  # type: ignore[operator]


# -- polling learns the indexing time -------------------------------------------------------


@pytest.mark.parametrize("indexing", [0.0, 30.0, 90.0])
async def test_the_first_view_waits_for_the_indexing_time_learned_before(indexing: float) -> None:
    """Writes that take a while to index (Batch: 30 s to 5 min is reported): after the first,
    about one probe each; at most 1.5 on average over 100 writes."""
    clock = FakeClock()
    learner = DelayLearner()
    probes = 0
    writes = 100
    for _ in range(writes):
        issued = clock.now

        async def probe(issued: float = issued) -> bool | None:
            nonlocal probes
            probes += 1
            return True if clock.now - issued >= indexing else None

        polled = await wait_until(
            probe,
            policy=PollPolicy(max_wait=600, interval=0.25, backoff=1.5, max_interval=5.0),
            pending=lambda: ["t"],
            sleep=clock.sleep,
            clock=clock,
            first_delay=learner.guess,
            since=issued,
        )
        learner.learn(polled)
    assert probes / writes <= 1.5
