"""No key and no URL password reach a traceback, its locals, an exception chain, a repr or a log.

Each error kind a request can end in (401, 404, 429 exhausted, 5xx, a timeout, a refused
connection, a body that is not JSON, a 2xx body of the wrong shape) is raised through the
public API of both backends against a hostile server that echoes every credential it received
in its bodies and headers. The error is then examined as an error tracker would: the traceback
formatted with ``capture_locals=True``, every ``__context__`` and ``__cause__`` followed, every
local of every frame inspected (an ``httpx.Request`` there must not carry the key).
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from audiencekit import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    Member,
    NotFoundError,
    PartialFailureError,
    RateLimitError,
)
from audiencekit.errors import InternalServerError, UnexpectedResponseError
from audiencekit.options import RetryPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend

pytestmark = pytest.mark.anyio

KEY = "live-key-0b7c5e9d41a2f3"
PROJECT = "project-77ab12cd34ef"
PASSWORD = "hunter2-url-password"
USERINFO = f"deploy:{PASSWORD}"
SECRETS = (KEY, PROJECT, PASSWORD)
AUDIENCE = "6f1c2d3e-4a5b-4c6d-8e7f-0a1b2c3d4e5f"


def echo(request: httpx.Request) -> str:
    """Everything the request carried that a server could repeat back."""
    return f"{dict(request.headers)} {request.url}"


def answer(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        said = echo(request)
        if kind == "timeout":
            raise httpx.ReadTimeout(f"read timed out {said}", request=request)
        if kind == "refused":
            raise httpx.ConnectError(f"refused {said}", request=request)
        if kind == "bad json":
            return httpx.Response(200, text=f"<html>{said}</html>")
        if kind == "wrong shape":
            return httpx.Response(200, json=[said, {"data": said}])
        status = {"401": 401, "404": 404, "429": 429, "5xx": 503}[kind]
        return httpx.Response(
            status,
            headers={"x-request-id": "r1", "x-echo": said[:200]},
            json={
                "errors": [{"code": 1001, "message": said}],
                "error_code": "E",
                "error_message": said,
                said: said,
            },
        )

    return respond


EXPECTED = {
    "401": AuthenticationError,
    "404": NotFoundError,
    "429": RateLimitError,
    "5xx": InternalServerError,
    "timeout": APITimeoutError,
    "refused": APIConnectionError,
    "bad json": UnexpectedResponseError,
    "wrong shape": UnexpectedResponseError,
}


def backend_for(provider: str, transport: httpx.AsyncBaseTransport, base_url: str) -> Any:
    options: dict[str, Any] = {
        "api_key": KEY,
        "base_url": base_url,
        "http_client": httpx.AsyncClient(transport=transport),
        "retry": RetryPolicy(max_retries=1, initial_delay=0, rate_limit_timeout=0),
        "rate_limit": None,
    }
    if provider == "batch":
        return BatchBackend(project_key=PROJECT, **options)
    return DexatelBackend(**options)


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error, everything reachable through __context__/__cause__, and nested outcomes."""
    todo, seen = [error], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__context__, current.__cause__) if e is not None]
        if isinstance(current, PartialFailureError):
            outcomes = {**current.result.failed, **current.result.unknown}
            todo += [e for e in outcomes.values() if isinstance(e, BaseException)]


def leaks(error: BaseException) -> list[str]:
    found = []
    for current in chain(error):
        assert not isinstance(current, httpx.HTTPError), f"httpx's {current!r} is reachable"
        shown = "".join(
            traceback.TracebackException.from_exception(current, capture_locals=True).format()
        )
        texts = [shown, repr(current), str(current), repr(vars(current))]
        tb = current.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, httpx.Request):
                    texts.append(echo(value))
                elif isinstance(value, (dict, httpx.Headers)):
                    texts.append(repr(dict(value)))
            tb = tb.tb_next
        found += [f"{type(current).__name__}: {s}" for t in texts for s in SECRETS if s in t]
    return found


async def collect(backend: Any, audience: str) -> list[BaseException]:
    """The errors of one read and one bulk write; this frame holds no secret of its own."""
    errors: list[BaseException] = []
    for call in (
        lambda: backend.get_audience(audience),
        lambda: backend.add_members(audience, [Member("+37477000001")]),
    ):
        try:
            await call()
        except Exception as exc:  # every kind ends in an error: examined by the caller
            errors.append(exc)
    return errors


@pytest.mark.parametrize("provider", ["batch", "dexatel"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_no_secret_reachable_from_any_error(
    provider: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base_url = f"https://{USERINFO}@api.example.test/v1"
    backend = backend_for(provider, httpx.MockTransport(answer(kind)), base_url)
    del base_url  # the test's own frame is in every traceback: it must hold no secret either
    async with backend:
        errors = await collect(backend, "vip" if provider == "batch" else AUDIENCE)
        shown = [repr(backend), repr(backend.client), repr(backend.client.transport)]

    assert len(errors) == 2
    single = errors[0]
    assert isinstance(single, EXPECTED[kind]), repr(single)
    assert isinstance(errors[1], (APIError, PartialFailureError)), repr(errors[1])
    for error in errors:
        assert leaks(error) == []
    logged = [r.getMessage() for r in caplog.records] + [str(r.exc_info) for r in caplog.records]
    assert [t for t in logged + shown for s in SECRETS if s in t] == []
    assert all("deploy" not in t for t in shown)  # the user of the userinfo is dropped too


@pytest.mark.parametrize("provider", ["batch", "dexatel"])
async def test_a_real_refused_connection_leaks_nothing(provider: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://{USERINFO}@127.0.0.1:{port}/v1"
    options: dict[str, Any] = {
        "api_key": KEY,
        "base_url": base_url,
        "retry": RetryPolicy(max_retries=0),
        "rate_limit": None,
    }
    backend = (
        BatchBackend(project_key=PROJECT, **options)
        if provider == "batch"
        else DexatelBackend(**options)
    )
    del base_url, options
    async with backend:
        errors = await collect(backend, "vip" if provider == "batch" else AUDIENCE)
    assert isinstance(errors[0], APIConnectionError)
    assert errors[0].request_sent is False
    assert [e for error in errors for e in leaks(error)] == []


async def test_the_request_the_transport_holds_never_carries_the_key() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"id": AUDIENCE, "name": "vip"}})

    backend = backend_for("dexatel", httpx.MockTransport(record), "https://api.example.test/v1")
    async with backend:
        built = backend.client.transport._client.build_request("GET", "https://x.test/")
        await backend.client.transport._client.send(built, auth=backend.client.transport._auth)
        await backend.get_audience(AUDIENCE)
    assert [r.headers["x-dexatel-key"] for r in seen] == [KEY, KEY]  # the key was sent
    assert "x-dexatel-key" not in built.headers  # but the caller's request was left alone


def test_a_short_key_redacts_only_where_it_stands_alone() -> None:
    backend = DexatelBackend(api_key="p", base_url="https://api.example.test/v1")
    redact = backend.client.transport.redact
    assert redact("page_size and p=3 and key p") == "page_size and ***=3 and key ***"
    assert redact("https://api.example.test/v1/audiences/p") == (
        "https://api.example.test/v1/audiences/***"
    )


def test_long_keys_are_redacted_inside_words_too() -> None:
    backend = DexatelBackend(api_key=KEY, base_url="https://api.example.test/v1")
    assert backend.client.transport.redact(f"x{KEY}y") == "x***y"


async def test_an_unexpected_2xx_body_is_redacted() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"surprise": request.headers["x-dexatel-key"]})

    backend = backend_for("dexatel", httpx.MockTransport(respond), "https://api.example.test/v1")
    async with backend:
        with pytest.raises(UnexpectedResponseError) as caught:
            await backend.get_audience(AUDIENCE)
    assert caught.value.body == {"surprise": "***"}
    assert KEY not in str(caught.value)
