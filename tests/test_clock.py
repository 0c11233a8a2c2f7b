"""One clock: the transport, the rate governor and the poller read the same one by default."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from audiencekit.core.rate import DECREASE, HEADROOM, INCREASE
from audiencekit.core.transport import ClientOptions, Transport
from audiencekit.errors import ErrorDetail

from .support import FakeClock

pytestmark = pytest.mark.anyio

BASE = "https://clock.example.test/v1"
CEILING = 10.0
IN_FLIGHT = 3
LATENCY = 0.05


def parse_error(response: httpx.Response, body: object) -> ErrorDetail:
    return ErrorDetail(str(body))


@pytest.mark.parametrize("retry_after", [None, 2.0])
async def test_refusals_in_flight_together_lower_the_pace_once_on_every_event_loop(
    monkeypatch: pytest.MonkeyPatch, retry_after: float | None
) -> None:
    """Three requests sent before the first 429 comes back lower the rate once (not three
    times), under asyncio and trio alike: the transport times each send on the clock the
    governor reads. The host's clock is faked (sleeps move it), so no wall time is involved."""
    clock = FakeClock(start=1_000.0)
    monkeypatch.setattr(time, "monotonic", clock)
    arrived: list[float] = []
    all_sent = anyio.Event()
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(clock.now)
        if len(arrived) > IN_FLIGHT:
            return httpx.Response(200)
        if len(arrived) == IN_FLIGHT:
            clock.now += LATENCY  # the answers come back once all three are on their way
            all_sent.set()
        await all_sent.wait()
        return httpx.Response(429, headers=headers)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        Transport(
            provider="example",
            auth_headers={"X-Key": "secret-key-123"},
            parse_error=parse_error,
            options=ClientOptions(
                base_url=BASE,
                http_client=http,
                rate_limit=CEILING,
                sleep=clock.sleep,
                shared_budget=False,  # this process's pace alone: no other process's grants
            ),
            rate_scope=f"one-clock-{retry_after}",
        ) as transport,
    ):
        governor = transport.governor
        assert governor is not None
        async with anyio.create_task_group() as group:
            for _ in range(IN_FLIGHT):
                group.start_soon(lambda: transport.request("GET", "/thing", replay_safe=True))

    lowered = CEILING * DECREASE
    assert governor.refusals == IN_FLIGHT
    # lowered once, then one step back up for each of the three retries accepted
    assert governor.rate == pytest.approx(lowered + IN_FLIGHT * INCREASE * CEILING)
    answered = arrived[IN_FLIGHT - 1] + LATENCY
    pause = retry_after if retry_after is not None else 1 / (lowered * HEADROOM)
    assert arrived[IN_FLIGHT] == pytest.approx(answered + pause)
