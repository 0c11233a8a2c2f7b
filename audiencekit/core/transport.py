"""The transport every provider shares: one httpx client, retries, limits, redaction, errors.

Providers hand it a path and a body and get back a successful ``httpx.Response`` or an
audiencekit exception; nothing else about HTTP leaks to them or to callers.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import math
import os
import random
import re
import warnings
from collections.abc import Callable, Generator, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio
import attrs
import httpx

from .. import telemetry
from ..errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    ErrorDetail,
    NotFoundError,
    UnexpectedResponseError,
    may_have_taken_effect,
    status_error_class,
)
from .account import account_fingerprint
from .clock import DEFAULT_SLEEP, Clock, Sleep, monotonic
from .rate import SharedBudget, budget_for, governor_for
from .stats import CallStats
from .wire import read_json, redact_json, unexpected

__all__ = [
    "DEFAULT_TIMEOUT",
    "PROVIDER_DEFAULT",
    "ClientOptions",
    "RetryPolicy",
    "Transport",
    "ProviderClient",
    "credential",
    "parse_retry_after",
]

logger = logging.getLogger("audiencekit")

#: 30 s for the whole exchange, 5 s to open a connection.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

_REDACTED = "***"
#: Secrets shorter than this are redacted only where they stand alone (not inside a word), so
#: that a one-letter key does not turn every "p" of a message into "***".
_SHORT_SECRET = 8


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
    #: How long, in all, a request the provider refuses with 429 keeps being sent again. A 429
    #: is a refusal before anything happened, so it is retried for every call, by time rather
    #: than by count.
    rate_limit_timeout: float = attrs.field(default=600.0, validator=attrs.validators.ge(0))
    #: Other statuses worth another try, for calls that are safe to replay.
    statuses: frozenset[int] = frozenset({408, 500, 502, 503, 504})

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt + 1`` when the provider gave no Retry-After."""
        ceiling = min(self.max_delay, self.initial_delay * math.pow(2, attempt))
        return rng.uniform(0, ceiling)


class _ProviderDefault(enum.Enum):
    DEFAULT = "the provider's default"

    def __repr__(self) -> str:
        return "PROVIDER_DEFAULT"


#: An option left to the provider: its own base URL, its own rate limit.
PROVIDER_DEFAULT = _ProviderDefault.DEFAULT
_Default: TypeAlias = Literal[_ProviderDefault.DEFAULT]


def _known_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as ClientOptions fields (``client=`` is the deprecated name of
    ``http_client=`` for clients and transports)."""
    found = dict(options)
    if "client" in found:
        warnings.warn(
            "client= is deprecated; pass http_client= (the name the backends use)",
            DeprecationWarning,
            stacklevel=4,
        )
        found["http_client"] = found.pop("client")
    return found


@attrs.frozen(kw_only=True)
class ClientOptions:
    """How a client reaches its provider, the same for every provider: one record, which a
    backend builds from its keyword arguments, hands to its client, and the client to its
    :class:`Transport`. Credentials are not in it: each client turns its own into headers.

    ``base_url`` and ``rate_limit`` left at :data:`PROVIDER_DEFAULT` take the provider's
    (``rate_limit=None`` switches the rate governor off). ``http_client`` may be your own
    ``httpx.AsyncClient`` (left open; give it its own timeout). ``sleep``, ``clock`` and
    ``rng`` replace the library's (see :mod:`audiencekit.core.clock`) and ``random``'s, for tests.
    ``shared_budget``: True (the default) shares each rate budget with the other processes of
    the host that use the same credential (unless ``AUDIENCEKIT_SHARED_BUDGET=off``; with a
    ``postgresql://`` URL there, with every host using that database), False keeps it to this
    process, a :class:`~audiencekit.core.rate.SharedBudget` shares that one (such as
    ``PostgresBudget(url)``, from :mod:`audiencekit.state.postgres`).
    """

    base_url: str | _Default = PROVIDER_DEFAULT
    http_client: httpx.AsyncClient | None = attrs.field(default=None, repr=False)
    timeout: httpx.Timeout | float | None = None
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    rate_limit: float | _Default | None = PROVIDER_DEFAULT
    max_concurrency: int = 8
    headers: Mapping[str, str] | None = None
    sleep: Sleep | None = attrs.field(default=None, repr=False)
    clock: Clock | None = attrs.field(default=None, repr=False)
    rng: random.Random | None = attrs.field(default=None, repr=False)
    shared_budget: SharedBudget | bool = attrs.field(default=True, repr=False)

    @classmethod
    def of(cls, options: ClientOptions | None = None, **changes: Any) -> ClientOptions:
        """``options`` (or the defaults) with ``changes``; a ``retry`` of None keeps the
        default policy. An unknown name raises TypeError, as a misspelt argument does."""
        changes = _known_options(changes)
        if "retry" in changes and changes["retry"] is None:
            del changes["retry"]
        return attrs.evolve(options or cls(), **changes)

    def for_provider(
        self, *, base_url: str, rate_limit: float | None, base_url_env: str | None = None
    ) -> ClientOptions:
        """These options with the provider's defaults where none was chosen. The base URL is
        the one given, else the environment variable ``base_url_env`` when set (how a program
        is pointed at an emulator), else the provider's."""
        if self.base_url is PROVIDER_DEFAULT:
            base_url = (os.environ.get(base_url_env) if base_url_env else None) or base_url
        else:
            base_url = self.base_url
        return attrs.evolve(
            self,
            base_url=base_url,
            rate_limit=rate_limit if self.rate_limit is PROVIDER_DEFAULT else self.rate_limit,
        )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None for
    anything else: a missing, malformed, infinite or unrepresentable value never raises."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


ErrorParser = Callable[[httpx.Response, Any], ErrorDetail]


class _HeaderAuth(httpx.Auth):
    """Adds the credential headers to each request as httpx sends it, so that no frame of ours
    holds them in a local variable; its repr shows no value."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def __repr__(self) -> str:
        return f"<credentials {', '.join(self._headers)}: ***>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # A copy goes out: the request the transport holds never carries the credentials.
        headers = request.headers.copy()
        headers.update(self._headers)
        yield httpx.Request(
            request.method,
            request.url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )


class Transport:
    """One provider's HTTP connection: auth, retries, the rate governor, concurrency, errors.

    How it connects is a :class:`ClientOptions` (``options``; keyword arguments change single
    fields of it). An ``http_client`` of the caller's own is left open on :meth:`aclose`. The
    auth headers are added per request (never set on the client) and every value in them is
    redacted from logs and exceptions.

    ``rate_limit`` is the ceiling, in requests per second, of the :class:`~audiencekit.core.rate.
    RateGovernor` shared by every transport of ``rate_scope`` (the credential the provider
    counts requests against; all auth header values by default) at this base URL: ``math.inf``
    for no ceiling (the governor still slows down on 429; the default here), ``None`` for no
    governor at all.
    """

    def __init__(
        self,
        *,
        provider: str,
        auth_headers: Mapping[str, str],
        parse_error: ErrorParser,
        options: ClientOptions | None = None,
        rate_scope: str | None = None,
        **changes: Any,
    ) -> None:
        options = ClientOptions.of(options, **changes)
        if options.base_url is PROVIDER_DEFAULT:
            raise ConfigurationError(f"{provider}: the transport needs a base_url")
        base_url, userinfo = split_userinfo(options.base_url)
        rate_limit = math.inf if options.rate_limit is PROVIDER_DEFAULT else options.rate_limit
        #: The options in force (a user:password given in the base URL is not kept).
        self.options = options = attrs.evolve(options, base_url=base_url, rate_limit=rate_limit)
        client, timeout, max_concurrency = (
            options.http_client,
            options.timeout,
            options.max_concurrency,
        )
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{provider}: base_url must be an http(s) URL: {base_url!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"{provider}: max_concurrency must be at least 1")
        if rate_limit is not None and not rate_limit > 0:
            raise ConfigurationError(
                f"{provider}: rate_limit must be a positive number per second (or None)"
            )
        if client is not None and timeout is not None:
            raise ConfigurationError(f"{provider}: pass timeout to your own client, not here")
        missing = [name for name, value in auth_headers.items() if not value]
        if missing:
            raise ConfigurationError(f"{provider}: no value for {', '.join(missing)}")
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._server = _server_of(self.base_url)
        #: The base URL's path, which every url.template starts with ("/v1", "/2.3").
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self.retry = options.retry
        self._auth = _HeaderAuth(auth_headers)
        # Redact each header value and, for "Bearer <key>" style values, the bare key as well.
        secrets = {part for v in auth_headers.values() for part in (v, v.split(" ")[-1]) if part}
        if userinfo is not None:
            # The credentials authenticate; a user:password in the URL would go nowhere (httpx
            # uses it only without other auth), so it is dropped, and kept out of every text.
            password = userinfo.partition(":")[2]
            secrets.update(s for s in (userinfo, password, unquote(password)) if s)
            logger.warning("%s: the user:password in base_url is not used; dropped", provider)
        self._redactor = _redactor(secrets)
        self._redactor_bytes = re.compile(
            self._redactor.pattern.encode() if self._redactor is not None else b"(?!)"
        )
        self._parse_error = parse_error
        #: What every wait of this transport's provider sleeps with and is timed on.
        self.sleep: Sleep = options.sleep if options.sleep is not None else DEFAULT_SLEEP
        self.clock: Clock = options.clock if options.clock is not None else monotonic
        self._rng = options.rng if options.rng is not None else random.Random()
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        counted_by = rate_scope if rate_scope is not None else "\n".join(auth_headers.values())
        #: The fingerprint of the account the credential belongs to (never the credential).
        self.account = account_fingerprint(counted_by)
        self.governor = (
            governor_for(
                self.base_url,
                counted_by,
                rate_limit,
                self.clock,
                budget_for(options.shared_budget, self.clock),
            )
            if rate_limit is not None
            else None
        )
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            headers=dict(options.headers or {}),
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
        return self._redactor.sub(_REDACTED, text) if self._redactor is not None else text

    def read_json(self, response: httpx.Response) -> Any:
        """The JSON body of a successful answer, or an UnexpectedResponseError saying (redacted)
        what came instead. A body that repeats a secret comes back with it redacted, so that no
        caller holds it (one scan of the bytes; bodies without a secret are not copied)."""
        body = read_json(response, provider=self.provider, redact=self.redact)
        if self._redactor is not None and self._redactor_bytes.search(response.content):
            body = redact_json(body, self.redact)
        return body

    def unexpected(self, message: str, body: object = None) -> UnexpectedResponseError:
        """An UnexpectedResponseError about a successful answer, its body redacted."""
        return unexpected(message, provider=self.provider, redact=self.redact, body=body)

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
        deletes: bool | None = None,
        template: str | None = None,
    ) -> httpx.Response:
        """Send one request, retrying what the policy allows, and return a 2xx response.

        ``template`` is ``path`` with its variable parts (ids, names) as ``{name}``
        placeholders (``/audiences/{audience_id}``): the name of each attempt's span in
        telemetry, which never shows a concrete path. A path without variable parts is its
        own template (the default).

        ``deletes`` (by default: the method is DELETE) says that the request deletes what it
        names: a 404 to a try made after one that may have taken effect means it is done.

        ``replay_safe`` says whether sending the same request twice is harmless. When it is
        False, only failures that certainly happened before the provider did anything (a refused
        connection, a 429) are retried. A 429 is retried until ``retry.rate_limit_timeout`` has
        passed since the first one, other failures ``retry.max_retries`` times. Only the
        exchange itself of a write is shielded from cancellation (so that an answer the
        provider sent is not lost); waiting between tries is not.
        """
        url = self.url(path)
        shown = self.redact(f"{method} {url}")
        shield = method != "GET"
        deletes = method == "DELETE" if deletes is None else deletes
        governor = self.governor
        failures = 0  # failures other than 429, counted against retry.max_retries
        refusals = 0
        took_effect = False  # whether an earlier try may have taken effect
        refused_since: float | None = None
        traced = telemetry.ENABLED
        tries = 0
        while True:
            if stats is not None:
                stats.requests += 1
            attempt = self._attempt(method, path, template, tries) if traced else None
            tries += 1
            try:
                response, sent_at = await self._send_once(
                    method,
                    url,
                    json=json,
                    content=content,
                    params=params,
                    shield=shield,
                    attempt=attempt,
                )
            except APIConnectionError as exc:
                retryable = replay_safe or not exc.request_sent
                delay = self._delay(failures, None) if retryable else None
                if delay is None:
                    raise
                failures += 1
                took_effect = took_effect or may_have_taken_effect(exc)
                logger.info("%s failed (%s); retry %d in %.2fs", shown, exc, failures, delay)
            else:
                if attempt is not None:
                    attempt.end(response.status_code)
                if response.is_success:
                    if governor is not None:
                        governor.accepted()
                    logger.debug("%s -> %d", shown, response.status_code)
                    return response
                error = self._status_error(response)
                if took_effect and deletes and isinstance(error, NotFoundError):
                    # An earlier try was lost on its way back; this one finds the thing gone.
                    logger.info("%s -> %d after a lost answer: deleted", shown, error.status)
                    return httpx.Response(204, request=response.request)
                if response.status_code == 429:
                    if attempt is not None:
                        telemetry.rate_refused(self.provider)
                    refused_since = sent_at if refused_since is None else refused_since
                    if governor is not None:
                        await governor.report_refusal(sent_at, error.retry_after)
                    delay = self._refused_delay(refusals, error.retry_after, refused_since)
                    if delay is None:
                        logger.debug("%s -> 429, not retried", shown)
                        raise error
                    refusals += 1
                else:
                    retryable = response.status_code in self.retry.statuses and replay_safe
                    delay = self._delay(failures, error.retry_after) if retryable else None
                    if delay is None:
                        logger.debug("%s -> %d, not retried", shown, response.status_code)
                        raise error
                    failures += 1
                    took_effect = took_effect or may_have_taken_effect(error)
                logger.info("%s -> %d; retry in %.2fs", shown, response.status_code, delay)
            if stats is not None:
                stats.retries += 1
            if delay > 0:
                await self.sleep(delay)

    def _attempt(
        self, method: str, path: str, template: str | None, tries: int
    ) -> telemetry.HttpAttempt:
        """The telemetry of one try (only made when OpenTelemetry is there)."""
        if path.startswith(("http://", "https://")):
            address, port = _server_of(path)
            template = template or urlsplit(path).path
        else:
            address, port = self._server
            template = f"{self._base_path}/{(template or path).lstrip('/')}"
        return telemetry.HttpAttempt(method, template, address, port, tries)

    async def pause(self, attempt: int) -> None:
        """Wait the policy's backoff before try number ``attempt + 1`` of a call made again
        above the transport (``create_once``)."""
        await self.sleep(self.retry.backoff(attempt, self._rng))

    def _delay(self, failures: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next try after a failure, or None to give up now."""
        if failures >= self.retry.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.retry.max_retry_after else None
        return self.retry.backoff(failures, self._rng)

    def _refused_delay(
        self, refusals: int, retry_after: float | None, since: float
    ) -> float | None:
        """Seconds to wait before sending a refused (429) request again, or None once the
        refusals have lasted ``retry.rate_limit_timeout`` (or the provider asks for more)."""
        left = self.retry.rate_limit_timeout - (self.clock() - since)
        if retry_after is not None and retry_after > min(left, self.retry.max_retry_after):
            return None
        if left <= 0:
            return None
        if self.governor is not None:
            return 0.0  # the governor paces the next try (and honours the Retry-After)
        if retry_after is not None:
            return retry_after
        return min(self.retry.backoff(refusals, self._rng), left)

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        json: Any,
        content: bytes | None,
        params: Any,
        shield: bool,
        attempt: telemetry.HttpAttempt | None = None,
    ) -> tuple[httpx.Response, float]:
        """One exchange, and when it began. The governor's slot is claimed last, just before
        the request goes out, so that what happens between does not bunch requests up.

        An httpx failure becomes an audiencekit error raised outside the ``except``: no
        ``__context__`` leads back to httpx's exception, its request or its headers.
        """
        failure: APIConnectionError
        try:
            async with self._limiter:
                request = self._client.build_request(
                    method,
                    url,
                    json=json,
                    content=content,
                    params=params,
                    headers={"Content-Type": "application/json"} if content is not None else None,
                )
                if content is not None:
                    request.stream = _Body(content)
                if self.governor is not None:
                    waited = await self.governor.acquire(self.sleep)
                    if waited and attempt is not None:
                        telemetry.rate_waited(self.provider, waited)
                sent_at = self.clock()
                if attempt is not None:
                    attempt.start()
                with anyio.CancelScope(shield=shield):
                    response = await self._client.send(request, auth=self._auth)
                    await response.aread()
                return response, sent_at
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            kind = (
                APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
            )
            failure = kind(
                self._describe(exc, "could not connect"), provider=self.provider, request_sent=False
            )
            cause = type(exc).__name__
        except httpx.TimeoutException as exc:
            failure = APITimeoutError(self._describe(exc, "timed out"), provider=self.provider)
            cause = type(exc).__name__
        except httpx.TransportError as exc:
            failure = APIConnectionError(
                self._describe(exc, "connection failed"), provider=self.provider
            )
            cause = type(exc).__name__
        except BaseException as exc:  # cancelled, say: the attempt's span ends all the same
            if attempt is not None:
                attempt.end(error_type=type(exc).__name__)
            raise
        if attempt is not None:
            attempt.end(error_type=cause)
        raise failure

    def _describe(self, exc: Exception, what: str) -> str:
        detail = self.redact(str(exc)) or type(exc).__name__
        return f"{self.provider}: {what} ({type(exc).__name__}: {detail})"

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        body: Any
        try:
            body = redact_json(response.json(), self.redact)
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


def _server_of(url: str) -> tuple[str, int]:
    """The host and port of ``url`` (the scheme's port when none is given): server.address and
    server.port in telemetry, never the user:password."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@``, and that user:password (None when absent)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    return urlunsplit(parts._replace(netloc=host)), userinfo


def _redactor(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for every secret: the longest first, short ones only where they stand alone."""
    ordered = sorted(set(secrets), key=len, reverse=True)
    long = [re.escape(s) for s in ordered if len(s) >= _SHORT_SECRET]
    short = [re.escape(s) for s in ordered if len(s) < _SHORT_SECRET]
    if short:
        long.append(rf"(?<![A-Za-z0-9])(?:{'|'.join(short)})(?![A-Za-z0-9])")
    return re.compile("|".join(long)) if long else None
