"""The transport every provider shares: one httpx client, retries, limits, redaction, errors.

Providers hand it a path and a body and get back a successful ``httpx.Response`` or an
audiencekit exception; nothing else about HTTP leaks to them or to callers.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import anyio
import attrs
import httpx

from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    status_error_class,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallStats",
    "ErrorDetail",
    "RetryPolicy",
    "Transport",
    "ProviderClient",
    "credential",
    "parse_retry_after",
]

logger = logging.getLogger("audiencekit")

#: 30 s for the whole exchange, 5 s to open a connection.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

_REDACTED = "***"


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how long to wait before sending a request again.

    Delays use full-jitter exponential backoff (``uniform(0, min(max_delay, initial_delay *
    2**attempt))``). A ``Retry-After`` from the provider is honoured as given; one longer than
    ``max_retry_after`` is not waited for: the error is raised at once.
    """

    max_retries: int = attrs.field(default=4, validator=attrs.validators.ge(0))
    initial_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=20.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    #: Statuses worth another try. 429 is retried for every call (the provider refused it before
    #: doing anything); the others only for calls that are safe to replay.
    statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt + 1`` when the provider gave no Retry-After."""
        ceiling = min(self.max_delay, self.initial_delay * math.pow(2, attempt))
        return rng.uniform(0, ceiling)


#: Retry nothing: for callers who do their own.
NO_RETRY = RetryPolicy(max_retries=0)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


@attrs.frozen
class ErrorDetail:
    """What a provider's error body says: a message, the provider's code, and, when the code says
    more than the status (Dexatel answers some conflicts with 400), the exception class to use."""

    message: str
    code: str | int | None = None
    kind: type[APIStatusError] | None = None


ErrorParser = Callable[[httpx.Response, Any], ErrorDetail]


@attrs.define
class CallStats:
    """What one logical call cost: requests sent, retries among them, status probes while waiting.

    Passed down to :meth:`Transport.request` and ``wait_until``, so the counts survive a failure.
    """

    requests: int = 0
    retries: int = 0
    polls: int = 0


class _RateLimiter:
    """Spaces requests to at most ``rate`` a second, allowing bursts of ``burst`` (GCRA)."""

    def __init__(self, rate: float, burst: int, clock: Clock, sleep: Sleep) -> None:
        self._interval = 1.0 / rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    async def acquire(self) -> None:
        now = self._clock()
        slot = max(self._next, now - (self._burst - 1) * self._interval)
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)


class Transport:
    """One provider's HTTP connection: auth, retries, rate and concurrency limits, error mapping.

    ``client`` may be the caller's own ``httpx.AsyncClient``; it is then left open on
    :meth:`aclose`. The auth headers are added per request (never set on the client) and every
    value in them is redacted from logs and exceptions.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        auth_headers: Mapping[str, str],
        parse_error: ErrorParser,
        client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 8,
        rate_limit: float | None = None,
        rate_burst: int = 1,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{provider}: base_url must be an http(s) URL: {base_url!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"{provider}: max_concurrency must be at least 1")
        if rate_limit is not None and not rate_limit > 0:
            raise ConfigurationError(f"{provider}: rate_limit must be a positive number per second")
        if rate_burst < 1:
            raise ConfigurationError(f"{provider}: rate_burst must be at least 1")
        if client is not None and timeout is not None:
            raise ConfigurationError(f"{provider}: pass timeout to your own client, not here")
        missing = [name for name, value in auth_headers.items() if not value]
        if missing:
            raise ConfigurationError(f"{provider}: no value for {', '.join(missing)}")
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.retry = retry if retry is not None else RetryPolicy()
        self._auth_headers = dict(auth_headers)
        # Redact each header value and, for "Bearer <key>" style values, the bare key as well.
        secrets = {part for v in auth_headers.values() for part in (v, v.split(" ")[-1]) if part}
        self._secrets = tuple(sorted(secrets, key=len, reverse=True))
        self._parse_error = parse_error
        self._sleep: Sleep = sleep if sleep is not None else anyio.sleep
        self._clock: Clock = clock if clock is not None else anyio.current_time
        self._rng = rng if rng is not None else random.Random()
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._rate = (
            _RateLimiter(rate_limit, rate_burst, self._clock, self._sleep) if rate_limit else None
        )
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            headers=dict(headers or {}),
        )

    def __repr__(self) -> str:
        return f"<Transport {self.provider} {self.base_url}>"

    @property
    def max_concurrency(self) -> int:
        return int(self._limiter.total_tokens)

    async def aclose(self) -> None:
        """Close the connection pool, unless the caller owns the client."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def redact(self, text: str) -> str:
        """``text`` with every secret this transport knows replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (returned unchanged when already absolute)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        replay_safe: bool,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str | int] | Iterable[tuple[str, str | int]] | None = None,
        stats: CallStats | None = None,
    ) -> httpx.Response:
        """Send one request, retrying what the policy allows, and return a 2xx response.

        ``replay_safe`` says whether sending the same request twice is harmless. When it is
        False, only failures that certainly happened before the provider did anything (a refused
        connection, a 429) are retried.
        """
        url = self.url(path)
        shown = self.redact(f"{method} {url}")
        headers = dict(self._auth_headers)
        if content is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            if stats is not None:
                stats.requests += 1
            try:
                response = await self._send_once(
                    method, url, headers=headers, json=json, content=content, params=params
                )
            except APIConnectionError as exc:
                retryable = replay_safe or not exc.request_sent
                delay = self._delay(attempt, None) if retryable else None
                if delay is None:
                    raise
                logger.info("%s failed (%s); retry %d in %.2fs", shown, exc, attempt + 1, delay)
            else:
                if response.is_success:
                    logger.debug("%s -> %d", shown, response.status_code)
                    return response
                error = await self._status_error(response)
                retryable = response.status_code in self.retry.statuses and (
                    replay_safe or response.status_code == 429
                )
                delay = self._delay(attempt, error.retry_after) if retryable else None
                if delay is None:
                    logger.debug("%s -> %d, not retried", shown, response.status_code)
                    raise error
                logger.info(
                    "%s -> %d; retry %d in %.2fs", shown, response.status_code, attempt + 1, delay
                )
            attempt += 1
            if stats is not None:
                stats.retries += 1
            await self._sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next try, or None to give up now."""
        if attempt >= self.retry.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.retry.max_retry_after else None
        return self.retry.backoff(attempt, self._rng)

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json: Any,
        content: bytes | None,
        params: Any,
    ) -> httpx.Response:
        if self._rate is not None:
            await self._rate.acquire()
        try:
            async with self._limiter:
                request = self._client.build_request(
                    method, url, headers=headers, json=json, content=content, params=params
                )
                if content is not None:
                    request.stream = _Body(content)
                response = await self._client.send(request)
                await response.aread()
                return response
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            kind = (
                APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            )
            raise kind(
                self._describe(exc, "could not connect"), provider=self.provider, request_sent=False
            ) from None
        except httpx.TimeoutException as exc:
            raise APITimeoutError(
                self._describe(exc, "timed out"), provider=self.provider
            ) from None
        except httpx.TransportError as exc:
            raise APIConnectionError(
                self._describe(exc, "connection failed"), provider=self.provider
            ) from None

    def _describe(self, exc: Exception, what: str) -> str:
        detail = self.redact(str(exc)) or type(exc).__name__
        return f"{self.provider}: {what} ({type(exc).__name__}: {detail})"

    async def _status_error(self, response: httpx.Response) -> APIStatusError:
        body: Any
        try:
            body = _redact_value(response.json(), self.redact)
        except ValueError:
            body = self.redact(response.text[:2000])
        try:
            detail = self._parse_error(response, body)
        except Exception:  # a parser must never hide the real error
            logger.exception("%s: could not parse an error body", self.provider)
            detail = ErrorDetail(message=str(body)[:500] or response.reason_phrase)
        kind = detail.kind or status_error_class(response.status_code)
        return kind(
            self.redact(detail.message) or response.reason_phrase or "error",
            provider=self.provider,
            status=response.status_code,
            code=detail.code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            request_id=response.headers.get("x-request-id") or response.headers.get("request-id"),
            body=body,
        )


class _Body(httpx.AsyncByteStream):
    """A request body as a plain async iterator. httpx's own is an async generator, which trio
    reports as garbage collected unfinished when a request is cancelled mid-send (encode/httpx
    issue 3686); this one has nothing to finalise."""

    def __init__(self, content: bytes) -> None:
        self._content = content
        self._sent = False

    def __aiter__(self) -> _Body:
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self._content


C = TypeVar("C", bound="ProviderClient")


class ProviderClient:
    """What every provider's client shares: its transport, closing it, ``async with``, and a
    repr that shows where it points, never a key."""

    transport: Transport

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transport.base_url}>"

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def credential(value: str | None, env: str, what: str) -> str:
    """``value``, else the environment variable ``env``; a ConfigurationError naming both."""
    found = value if value is not None else os.environ.get(env)
    if not found:
        raise ConfigurationError(f"no {what} (pass it, or set {env})")
    return found


def _redact_value(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_value(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, redact) for k, v in value.items()}
    return value
