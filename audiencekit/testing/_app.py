"""What both emulators share: the request log, fault injection, inspection routes, error bodies.

An emulator is a pure ASGI app wrapping a Starlette app of provider routes. The wrapper logs every
provider request, applies the fault plan, and answers ``/_emulator/...`` itself: those routes are
not part of any provider API and need no key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import attrs
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ._faults import Fault, FaultKind, FaultPlan, Timing

__all__ = [
    "ConnectionDropped",
    "EmulatorApp",
    "LoggedRequest",
    "ProviderError",
    "arrived_at",
    "json_response",
    "request_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INSPECT = "/_emulator"


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised inside the app to cut a connection. Under a real server the socket closes mid-answer;
    in-process (``httpx.ASGITransport``) the client sees it as the transport error it subclasses."""

    def __init__(self) -> None:
        super().__init__("emulator fault: connection dropped")


class _QuietDrops(logging.Filter):
    """Keeps the server's error log free of the tracebacks of drops we made on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class ProviderError(Exception):
    """Raised by a route to answer with the provider's error body."""

    def __init__(
        self, status: int, message: str, code: str | int | None = None, **headers: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


@attrs.frozen(kw_only=True)
class LoggedRequest:
    """One provider request as the emulator received it, and the status it answered."""

    seq: int
    method: str
    path: str
    query: str
    body: Any
    status: int
    at: float
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response (the emulators answer large bodies; no pretty-printing)."""
    return Response(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class EmulatorApp:
    """Base of the Dexatel and Batch emulators. Subclasses supply routes, state and error bodies."""

    provider: str = "emulator"
    #: The path a client puts after the server's address in its base URL (Dexatel: "/v1").
    url_path: str = ""

    def __init__(self, *, faults: FaultPlan | None = None, log_bodies: bool = True) -> None:
        self.faults = faults or FaultPlan()
        self.log_bodies = log_bodies
        self.requests: list[LoggedRequest] = []
        self._seq = 0
        self.lock = threading.RLock()
        self._app = Starlette(
            routes=self.routes(),
            exception_handlers={
                ProviderError: self._on_provider_error,
                HTTPException: self._on_http_exception,
                Exception: self._on_bug,
            },
        )

    # -- for subclasses -------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def error_body(self, request: Request, status: int, message: str, code: Any) -> Any:
        raise NotImplementedError

    def default_code(self, status: int) -> str | int | None:
        """The provider code used for faults and routing errors of ``status``."""
        return None

    def snapshot(self) -> dict[str, Any]:
        """The stored state, as JSON-ready data (for ``GET /_emulator/state``)."""
        raise NotImplementedError

    def clear(self) -> None:
        """Forget all stored state."""
        raise NotImplementedError

    async def before(self, method: str, path: str) -> None:
        """Hook run before each provider request (Batch applies due writes here)."""

    def connection(self, url: str) -> dict[str, Any]:
        """The options a backend connects to this emulator with, when served at ``url`` (its
        base URL): the base URL and the keys the emulator accepts."""
        raise NotImplementedError

    def restore_defaults(self) -> None:
        """Put the configuration back to its defaults (before each test, say)."""

    def seed(self, data: Any) -> Any:
        """``POST /_emulator/seed``: load test data without provider requests (if supported)."""
        raise LookupError("this emulator takes no seed data")

    # -- public ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget state, the request log, and restart the fault plan's counters."""
        with self.lock:
            self.clear()
            self.requests.clear()
            self.faults = FaultPlan(self.faults.faults, seed=self.faults.seed)

    def set_faults(self, plan: FaultPlan) -> None:
        self.faults = plan

    def client(self, base_url: str = "http://emulator.local", **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` that calls this app in-process (no sockets, no server).

        Pass it as ``client=`` to a backend, with ``base_url`` (plus ``/v1`` for Dexatel).
        """
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self), base_url=base_url, **kwargs
        )

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == INSPECT or path.startswith(INSPECT + "/"):
            await self._inspect(scope, receive, send)
            return
        await self._provider_request(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _provider_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_ARRIVED] = time.monotonic()
        method: str = scope["method"]
        path: str = scope["path"]
        body = await _read_body(receive)
        fault = self.faults.pick(
            method, path, kinds=(FaultKind.STATUS, FaultKind.DROP, FaultKind.SLOW)
        )
        label = None if fault is None else f"{fault.kind.value}:{fault.timing.value}"
        logged = False

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def logging_send(message: Message) -> None:
            # Log before the answer leaves, so a client never sees an answer the log lacks.
            nonlocal logged
            if message["type"] == "http.response.start" and not logged:
                logged = True
                self._log(method, path, scope, body, int(message["status"]), label)
            await send(message)

        try:
            if fault is not None and fault.kind is FaultKind.SLOW:
                await anyio.sleep(fault.delay)
                fault = None
            await self.before(method, path)
            if fault is None:
                await self._app(scope, replay, logging_send)
            else:
                await self._faulty(fault, scope, replay, logging_send)
        finally:
            if not logged:
                self._log(method, path, scope, body, 0, label)

    async def _faulty(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.timing is Timing.AFTER:
            # Process the request for real, then lose the answer.
            async def discard(message: Message) -> None:
                return None

            await self._app(scope, receive, discard)
        if fault.kind is FaultKind.DROP:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            raise ConnectionDropped
        request = Request(scope, receive)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        response = json_response(
            self.error_body(
                request,
                fault.status,
                f"emulator fault: {fault.status}",
                self.default_code(fault.status),
            ),
            fault.status,
            headers,
        )
        await response(scope, receive, send)

    def _log(
        self, method: str, path: str, scope: Scope, body: bytes, status: int, fault: str | None
    ) -> None:
        parsed: Any = None
        if self.log_bodies and body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
        with self.lock:
            self._seq += 1
            self.requests.append(
                LoggedRequest(
                    seq=self._seq,
                    method=method,
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    body=parsed,
                    status=status,
                    at=time.time(),
                    fault=fault,
                )
            )

    # -- error handlers -------------------------------------------------------------------------

    async def _on_provider_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProviderError)
        return json_response(
            self.error_body(request, exc.status, exc.message, exc.code), exc.status, exc.headers
        )

    async def _on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "Route not found" if exc.status_code == 404 else str(exc.detail)
        return json_response(
            self.error_body(request, exc.status_code, message, self.default_code(exc.status_code)),
            exc.status_code,
        )

    async def _on_bug(self, request: Request, exc: Exception) -> Response:
        logging.getLogger("audiencekit.testing").exception("emulator bug")
        return json_response(
            self.error_body(request, 500, "Unexpected error", self.default_code(500)), 500
        )

    # -- inspection -----------------------------------------------------------------------------

    async def _inspect(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        what = scope["path"][len(INSPECT) :].strip("/")
        method = scope["method"]
        response: Response
        if what == "requests" and method == "GET":
            with self.lock:
                response = json_response([r.to_dict() for r in self.requests])
        elif what == "state" and method == "GET":
            with self.lock:
                response = json_response(self.snapshot())
        elif what == "reset" and method == "POST":
            self.reset()
            response = Response(status_code=204)
        elif what == "seed" and method == "POST":
            try:
                response = json_response(self.seed(json.loads(await request.body())))
            except (LookupError, ValueError, TypeError, ProviderError) as exc:
                response = json_response({"error": f"bad seed: {exc}"}, 400)
        elif what == "faults" and method == "GET":
            response = json_response(self.faults.to_dict() | {"fired": self.faults.fired()})
        elif what == "faults" and method == "PUT":
            try:
                self.set_faults(FaultPlan.from_dict(json.loads(await request.body())))
            except Exception as exc:  # a bad plan is the caller's error, not the emulator's
                response = json_response({"error": f"bad fault plan: {exc}"}, 400)
            else:
                response = json_response(self.faults.to_dict())
        else:
            response = json_response({"error": f"no inspection route {method} {what!r}"}, 404)
        await response(scope, receive, send)


_ARRIVED = "audiencekit.arrived"


def arrived_at(scope: Scope) -> float:
    """When a request reached the emulator (``time.monotonic()``), before its body was read."""
    return float(scope.get(_ARRIVED, time.monotonic()))


def request_json(raw: bytes) -> Any:
    """Parse a request body; an empty body is not JSON (ValueError)."""
    if not raw.strip():
        raise ValueError("empty body")
    return json.loads(raw)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
