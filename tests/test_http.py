"""The shared transport over respx: retries, Retry-After, replay safety, limits, error mapping."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import respx

from audiencekit import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    RateLimitError,
)
from audiencekit.core.rate import HEADROOM
from audiencekit.core.stats import CallStats
from audiencekit.core.transport import Transport, parse_retry_after
from audiencekit.errors import (
    BadRequestError,
    ConflictError,
    ErrorDetail,
    InternalServerError,
    PermissionDeniedError,
)
from audiencekit.options import RetryPolicy

from .support import FakeClock

pytestmark = pytest.mark.anyio

BASE = "https://api.example.test/v1"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)


def parse_error(response: httpx.Response, body: Any) -> ErrorDetail:
    if isinstance(body, dict) and "errors" in body:
        first = body["errors"][0]
        kind = ConflictError if first.get("code") == 1360 else None
        return ErrorDetail(first["message"], code=first.get("code"), kind=kind)
    return ErrorDetail(str(body))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def transport(clock: FakeClock) -> AsyncIterator[Transport]:
    transport = Transport(
        provider="example",
        base_url=BASE,
        auth_headers={"X-Key": "secret-key-123"},
        parse_error=parse_error,
        retry=RetryPolicy(max_retries=3, initial_delay=1.0, max_delay=8.0, max_retry_after=30),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1),
    )
    yield transport
    await transport.aclose()


# -- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("  7 ", 7.0),
        ("-4", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


@pytest.mark.parametrize(
    ("headers", "slept"),
    [
        ({"Retry-After": "2"}, [2.0]),
        ({"Retry-After": "0"}, []),
        ({}, None),  # no header: jittered backoff in [0, initial_delay]
    ],
)
@respx.mock
async def test_retry_after_is_honoured_without_a_governor(
    clock: FakeClock, headers: dict[str, str], slept: list[float] | None
) -> None:
    route = respx.get(f"{BASE}/thing").mock(
        side_effect=[httpx.Response(429, headers=headers), httpx.Response(200, json={"ok": 1})]
    )
    stats = CallStats()
    async with Transport(
        provider="example",
        base_url=BASE,
        auth_headers={"X-Key": "secret-key-123"},
        parse_error=parse_error,
        retry=RetryPolicy(max_retries=3, initial_delay=1.0, max_delay=8.0, max_retry_after=30),
        rate_limit=None,
        sleep=clock.sleep,
        clock=clock,
    ) as transport:
        response = await transport.request("GET", "/thing", replay_safe=True, stats=stats)

    assert response.json() == {"ok": 1}
    assert route.call_count == 2
    assert stats.requests == 2
    assert stats.retries == 1
    if slept is None:
        assert len(clock.sleeps) == 1
        assert 0 <= clock.sleeps[0] <= 1.0
    else:
        assert clock.sleeps == slept


@respx.mock
async def test_retry_after_http_date_is_honoured(transport: Transport, clock: FakeClock) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    respx.get(f"{BASE}/thing").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            httpx.Response(200),
        ]
    )
    await transport.request("GET", "/thing", replay_safe=True)
    assert len(clock.sleeps) == 1
    assert 18.0 < clock.sleeps[0] <= 20.0


@respx.mock
async def test_retry_after_over_the_cap_raises_at_once(
    transport: Transport, clock: FakeClock
) -> None:
    route = respx.get(f"{BASE}/thing").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "31"}, json={"errors": []})
    )
    with pytest.raises(RateLimitError) as caught:
        await transport.request("GET", "/thing", replay_safe=True)

    assert route.call_count == 1
    assert clock.sleeps == []
    assert caught.value.retry_after == 31.0
    assert caught.value.status == 429


@respx.mock
async def test_gives_up_after_max_retries_with_growing_jittered_backoff(
    transport: Transport, clock: FakeClock
) -> None:
    route = respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(502))
    with pytest.raises(InternalServerError):
        await transport.request("GET", "/thing", replay_safe=True)

    assert route.call_count == 4  # the first try and max_retries=3 retries
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= min(8.0, 1.0 * 2**attempt)


def test_full_jitter_spreads_over_the_whole_window() -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=4.0)
    rng = random.Random(3)
    delays = [policy.backoff(5, rng) for _ in range(2000)]
    assert max(delays) <= 4.0
    assert min(delays) >= 0.0
    assert min(delays) < 0.2
    assert max(delays) > 3.8


# -- replay safety ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
@respx.mock
async def test_a_call_not_safe_to_replay_is_not_resent_after_an_ambiguous_status(
    transport: Transport, status: int
) -> None:
    route = respx.post(f"{BASE}/contacts").mock(return_value=httpx.Response(status))
    with pytest.raises((InternalServerError, BadRequestError)):
        await transport.request("POST", "/contacts", json={"a": 1}, replay_safe=False)
    assert route.call_count == 1


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 429])
@respx.mock
async def test_a_replay_safe_call_is_retried_on_retryable_statuses(
    transport: Transport, status: int
) -> None:
    route = respx.post(f"{BASE}/update").mock(
        side_effect=[httpx.Response(status), httpx.Response(202, json={"t": 1})]
    )
    response = await transport.request("POST", "/update", json={"a": 1}, replay_safe=True)
    assert response.status_code == 202
    assert route.call_count == 2


@respx.mock
async def test_a_429_is_retried_even_when_not_safe_to_replay(transport: Transport) -> None:
    route = respx.post(f"{BASE}/contacts").mock(
        side_effect=[httpx.Response(429), httpx.Response(201, json={})]
    )
    await transport.request("POST", "/contacts", json={}, replay_safe=False)
    assert route.call_count == 2


@respx.mock
async def test_a_connect_error_is_retried_even_when_not_safe_to_replay(
    transport: Transport,
) -> None:
    route = respx.post(f"{BASE}/contacts").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={})]
    )
    await transport.request("POST", "/contacts", json={}, replay_safe=False)
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ReadTimeout("slow"), APITimeoutError),
        (httpx.RemoteProtocolError("dropped"), APIConnectionError),
        (httpx.ReadError("reset"), APIConnectionError),
    ],
)
@respx.mock
async def test_a_failure_after_sending_is_not_retried_when_not_safe_to_replay(
    transport: Transport, error: Exception, kind: type[Exception]
) -> None:
    route = respx.post(f"{BASE}/contacts").mock(side_effect=error)
    with pytest.raises(kind) as caught:
        await transport.request("POST", "/contacts", json={}, replay_safe=False)
    assert route.call_count == 1
    assert isinstance(caught.value, APIConnectionError)
    assert caught.value.request_sent is True


@respx.mock
async def test_connection_errors_are_retried_when_safe_then_raised(transport: Transport) -> None:
    route = respx.get(f"{BASE}/thing").mock(side_effect=httpx.RemoteProtocolError("dropped"))
    with pytest.raises(APIConnectionError, match="dropped"):
        await transport.request("GET", "/thing", replay_safe=True)
    assert route.call_count == 4


@respx.mock
async def test_client_errors_are_never_retried(transport: Transport) -> None:
    route = respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(400, json={"x": 1}))
    with pytest.raises(BadRequestError):
        await transport.request("GET", "/thing", replay_safe=True)
    assert route.call_count == 1


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (405, BadRequestError),
        (409, ConflictError),
        (413, BadRequestError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
    ],
)
@respx.mock
async def test_statuses_map_to_typed_errors(
    clock: FakeClock, status: int, kind: type[Exception]
) -> None:
    respx.get(f"{BASE}/thing").mock(
        return_value=httpx.Response(
            status,
            headers={"x-request-id": "req-42"},
            json={"errors": [{"code": 1301, "message": "Audience is not found"}]},
        )
    )
    transport = Transport(
        provider="example",
        base_url=BASE,
        auth_headers={"X-Key": "k"},
        parse_error=parse_error,
        retry=RetryPolicy(max_retries=0, rate_limit_timeout=0),
        sleep=clock.sleep,
        clock=clock,
    )
    async with transport:
        with pytest.raises(kind) as caught:
            await transport.request("GET", "/thing", replay_safe=True)
    error = caught.value
    assert type(error) is kind
    assert error.status == status  # type: ignore[attr-defined]
    assert error.code == 1301  # type: ignore[attr-defined]
    assert error.request_id == "req-42"  # type: ignore[attr-defined]
    assert "Audience is not found" in str(error)


@respx.mock
async def test_the_provider_hook_can_choose_the_class(transport: Transport) -> None:
    respx.post(f"{BASE}/contacts").mock(
        return_value=httpx.Response(
            400, json={"errors": [{"code": 1360, "message": "Contact already exists"}]}
        )
    )
    with pytest.raises(ConflictError) as caught:
        await transport.request("POST", "/contacts", json={}, replay_safe=False)
    assert caught.value.status == 400
    assert caught.value.code == 1360


@respx.mock
async def test_a_body_that_is_not_json_still_gives_a_useful_error(transport: Transport) -> None:
    respx.get(f"{BASE}/thing").mock(
        return_value=httpx.Response(404, text="<html>gateway: no such route</html>")
    )
    with pytest.raises(NotFoundError, match="no such route"):
        await transport.request("GET", "/thing", replay_safe=True)


@respx.mock
async def test_a_broken_error_parser_does_not_hide_the_error(clock: FakeClock) -> None:
    def explode(response: httpx.Response, body: Any) -> ErrorDetail:
        raise KeyError("oops")

    respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(409, json={"weird": True}))
    async with Transport(
        provider="example", base_url=BASE, auth_headers={"X-Key": "k"}, parse_error=explode
    ) as transport:
        with pytest.raises(ConflictError, match="weird"):
            await transport.request("GET", "/thing", replay_safe=True)


# -- limits -----------------------------------------------------------------------------------


async def test_the_concurrency_limit_holds(clock: FakeClock) -> None:
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.005)
        in_flight -= 1
        return httpx.Response(200)

    with respx.mock:
        respx.get(f"{BASE}/thing").mock(side_effect=slow)
        async with (
            Transport(
                provider="example",
                base_url=BASE,
                auth_headers={"X-Key": "k"},
                parse_error=parse_error,
                max_concurrency=3,
            ) as transport,
            anyio.create_task_group() as tg,
        ):
            for _ in range(20):
                tg.start_soon(lambda: transport.request("GET", "/thing", replay_safe=True))
    assert peak == 3


@respx.mock
async def test_the_rate_limit_spaces_requests(clock: FakeClock) -> None:
    respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(200))
    sent_at: list[float] = []
    async with Transport(
        provider="example",
        base_url=BASE,
        auth_headers={"X-Key": "k"},
        parse_error=parse_error,
        rate_limit=4.0,
        sleep=clock.sleep,
        clock=clock,
    ) as transport:
        for _ in range(6):
            await transport.request("GET", "/thing", replay_safe=True)
            sent_at.append(clock.now)
    # one at once, then one every 0.25 s / HEADROOM (a margin for arrival jitter)
    step = 0.25 / HEADROOM
    assert sent_at == pytest.approx([0.0, step, 2 * step, 3 * step, 4 * step, 5 * step])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "api.example.test"},
        {"max_concurrency": 0},
        {"rate_limit": 0},
        {"rate_limit": -1.0},
        {"auth_headers": {"X-Key": ""}},
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, Any]) -> None:
    settings: dict[str, Any] = {
        "provider": "example",
        "base_url": BASE,
        "auth_headers": {"X-Key": "k"},
        "parse_error": parse_error,
    }
    settings.update(kwargs)
    with pytest.raises(ConfigurationError):
        Transport(**settings)


async def test_a_callers_client_is_used_and_left_open() -> None:
    with respx.mock:
        route = respx.get(f"{BASE}/thing").mock(return_value=httpx.Response(200))
        async with httpx.AsyncClient(headers={"User-Agent": "mine"}) as client:
            async with Transport(
                provider="example",
                base_url=BASE,
                auth_headers={"X-Key": "k"},
                parse_error=parse_error,
                http_client=client,
            ) as transport:
                await transport.request("GET", "/thing", replay_safe=True)
            assert not client.is_closed
        request = route.calls.last.request
        assert request.headers["user-agent"] == "mine"
        assert request.headers["x-key"] == "k"


def test_client_options_are_one_record_from_backend_to_transport() -> None:
    """A backend's connection settings reach its transport as one ClientOptions; the provider's
    defaults fill what was not chosen; a misspelt option is refused; the old name warns."""
    from audiencekit.providers.base import ClientOptions
    from audiencekit.providers.batch import BatchBackend, BatchClient

    backend = BatchBackend(api_key="k", project_key="p", timeout=3.0, rate_limit=None)
    options = backend.client.transport.options
    assert (options.timeout, options.rate_limit) == (3.0, None)
    assert options.base_url == "https://api.batch.com/2.3"
    assert BatchClient(api_key="k", project_key="p").transport.options.rate_limit == 1.0
    mine = ClientOptions(base_url="http://127.0.0.1:9/", max_concurrency=2)
    assert BatchClient(api_key="k", project_key="p", options=mine).transport.options == (
        ClientOptions.of(mine, base_url="http://127.0.0.1:9/2.3", rate_limit=1.0)
    )
    with pytest.raises(TypeError):
        BatchClient(api_key="k", project_key="p", timout=3.0)
    with pytest.warns(DeprecationWarning, match="http_client"):
        old = BatchClient(api_key="k", project_key="p", client=httpx.AsyncClient())
    assert old.transport.options.http_client is not None
    assert "k" not in repr(options)


def test_the_base_url_is_the_argument_else_the_environment_else_the_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from audiencekit.providers.batch import BatchBackend
    from audiencekit.providers.dexatel import DexatelBackend

    def url(backend: BatchBackend | DexatelBackend) -> str:
        return backend.client.transport.base_url

    keys = {"api_key": "k"}
    monkeypatch.delenv("BATCH_BASE_URL", raising=False)
    monkeypatch.delenv("DEXATEL_BASE_URL", raising=False)
    assert url(BatchBackend(**keys, project_key="p")) == "https://api.batch.com/2.3"
    assert url(DexatelBackend(**keys)) == "https://api.dexatel.com/v1"
    monkeypatch.setenv("BATCH_BASE_URL", "http://127.0.0.1:8001")
    monkeypatch.setenv("DEXATEL_BASE_URL", "http://127.0.0.1:8002/v1")
    assert url(BatchBackend(**keys, project_key="p")) == "http://127.0.0.1:8001/2.3"
    assert url(DexatelBackend(**keys)) == "http://127.0.0.1:8002/v1"
    given = BatchBackend(**keys, project_key="p", base_url="http://10.0.0.1")
    assert url(given) == "http://10.0.0.1/2.3"
