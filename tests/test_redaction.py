"""Secrets never leave: not in a log record at DEBUG, a repr, an exception, or an error body."""

from __future__ import annotations

import logging
import traceback

import httpx
import pytest
import respx

from audiencekit import Add, AudienceKitError, AuthenticationError, Member, PartialFailureError

from .support import BASE, KEY, FakeClock, TokenBackend, TokenServer

pytestmark = pytest.mark.anyio


def echo_the_key(request: httpx.Request) -> httpx.Response:
    """A hostile server that repeats the auth header back in its error body and headers."""
    return httpx.Response(
        401,
        headers={"x-request-id": "r1", "www-authenticate": request.headers["authorization"]},
        json={"error_code": "AUTH", "error_message": f"bad key {request.headers['authorization']}"},
    )


async def test_no_key_in_logs_reprs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx's, httpcore's
    server = TokenServer(polls_to_apply=1)
    errors: list[BaseException] = []
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(clock=FakeClock(), chunk_size=2) as backend:
            server.fail = lambda ops: httpx.Response(
                503, json={"error_code": "DOWN", "error_message": f"echo {KEY}"}
            )
            try:
                await backend.add_members("aud", [])
                await backend.apply("aud", [], raise_on_failure=True)
                await backend.apply("aud", [Add(Member("a")), Add(Member("b"))])
            except PartialFailureError as exc:
                errors.append(exc)
                errors.extend(exc.result.unknown.values())
            server.fail = None
            router.post(f"{BASE}/update").mock(side_effect=echo_the_key)
            try:
                await backend.transport.request("POST", "/update", json={}, replay_safe=True)
            except AuthenticationError as exc:
                errors.append(exc)
            shown = [repr(backend), repr(backend.transport), repr(backend.transport.retry)]

    assert len(errors) == 4
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    assert any(record.levelno == logging.INFO for record in caplog.records)  # the retries
    texts = [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    texts += shown
    for error in errors:
        assert isinstance(error, AudienceKitError)
        texts += [str(error), repr(error), "".join(traceback.format_exception(error))]
        texts += [repr(getattr(error, "body", None))]
    leaks = [text for text in texts if KEY in text]
    assert leaks == []
    assert any("***" in text for text in texts)  # the echoed key was there, and was redacted
