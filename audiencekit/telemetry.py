"""OpenTelemetry spans and metrics when the ``otel`` extra is installed; no-ops otherwise.

Which one is decided once, at import: when ``opentelemetry`` (the API) cannot be imported,
:data:`ENABLED` is False, :func:`traced` returns the function it decorates unchanged, the
transport makes no attempt objects, and nothing of OpenTelemetry is ever imported. When it can,
spans and metrics go to the global tracer and meter providers (``opentelemetry.trace`` and
``opentelemetry.metrics``; the API's no-op ones until an SDK is configured, before or after
audiencekit is imported), or to the providers given to :func:`bind`.

What is recorded (see docs/telemetry.md):

- one CLIENT span per HTTP attempt (each try, retries and 429s included), named
  ``{METHOD} {url.template}``, with the stable HTTP semantic conventions' attributes;
- one INTERNAL span per bulk call (``audiencekit.add_members``, ``audiencekit.remove_members``,
  ``audiencekit.apply``, ``audiencekit.wait``, ``audiencekit.replace_members``) and per workflow
  run (``audiencekit.sync``, ``audiencekit.migrate``), carrying its counts;
- ``http.client.request.duration``, ``audiencekit.ids.applied`` / ``.failed`` / ``.unknown``,
  ``audiencekit.rate.wait.duration`` and ``audiencekit.rate.refusals``.

No secret, member id, attribute, audience id or name, URL or error message is ever recorded:
only methods, templates, hosts, ports, status codes, class names, provider names and counts.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["ENABLED", "HttpAttempt", "bind", "count_ids", "rate_refused", "rate_waited", "traced"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # the extra is not installed: every hook is a no-op
    _metrics = None  # type: ignore[assignment]
    _trace = None  # type: ignore[assignment]

#: Whether OpenTelemetry's API was importable (decided once, when this module was imported).
ENABLED = _trace is not None

_SCOPE = "audiencekit"
#: The semantic conventions' advice for ``http.client.request.duration`` (seconds).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

_tracer: Any = None
_duration: Any = None
_applied: Any = None
_failed: Any = None
_unknown: Any = None
_rate_wait: Any = None
_refusals: Any = None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("audiencekit")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def bind(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Send spans and metrics to these providers instead of the global ones (both None: back
    to the global ones). For tests, and for programs that keep their providers to themselves.
    A no-op without OpenTelemetry."""
    global _tracer, _duration, _applied, _failed, _unknown, _rate_wait, _refusals
    if not ENABLED:
        return
    version = _version()
    _tracer = (
        tracer_provider.get_tracer(_SCOPE, version)
        if tracer_provider is not None
        else _trace.get_tracer(_SCOPE, version)
    )
    meter = (
        meter_provider.get_meter(_SCOPE, version)
        if meter_provider is not None
        else _metrics.get_meter(_SCOPE, version)
    )
    _duration = meter.create_histogram(
        "http.client.request.duration",
        unit="s",
        description="Duration of HTTP client requests (each attempt).",
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )
    _applied = meter.create_counter(
        "audiencekit.ids.applied", unit="{id}", description="Ids the provider applied."
    )
    _failed = meter.create_counter(
        "audiencekit.ids.failed", unit="{id}", description="Ids the provider refused."
    )
    _unknown = meter.create_counter(
        "audiencekit.ids.unknown",
        unit="{id}",
        description="Ids whose outcome is not known (the provider may have applied them).",
    )
    _rate_wait = meter.create_histogram(
        "audiencekit.rate.wait.duration",
        unit="s",
        description="Time a request waited for the rate governor's slot (waits only).",
        explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
    )
    _refusals = meter.create_counter(
        "audiencekit.rate.refusals",
        unit="{request}",
        description="Requests the provider refused for its rate limit (429).",
    )


bind()


# -- HTTP attempts -------------------------------------------------------------------------------


class HttpAttempt:
    """One try of an HTTP request: a CLIENT span from :meth:`start` (just before it is sent)
    to :meth:`end`, and one ``http.client.request.duration`` point. Made only when
    :data:`ENABLED`; never holds a URL, a header or a body."""

    __slots__ = ("_attributes", "_name", "_span", "_started")

    def __init__(
        self, method: str, template: str, address: str, port: int, resend_count: int
    ) -> None:
        self._name = f"{method} {template}"
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "server.address": address,
            "server.port": port,
            "url.template": template,
        }
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        self._attributes = attributes
        self._span: Any = None
        self._started = 0.0

    def start(self) -> None:
        self._span = _tracer.start_span(
            self._name, kind=_trace.SpanKind.CLIENT, attributes=self._attributes
        )
        self._started = time.perf_counter()

    def end(self, status: int | None = None, error_type: str | None = None) -> None:
        """The attempt is over: answered ``status`` (None: no answer), failed as
        ``error_type`` (a status of 400 and above is its own error type). Ending twice, or
        before it started, does nothing."""
        span = self._span
        if span is None:
            return
        self._span = None
        elapsed = time.perf_counter() - self._started
        attributes = self._attributes
        attributes.pop("http.request.resend_count", None)  # not on the metric
        if status is not None:
            attributes["http.response.status_code"] = status
            if status >= 400 and error_type is None:
                error_type = str(status)
        if error_type is not None:
            attributes["error.type"] = error_type
        if span.is_recording():
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(_trace.StatusCode.ERROR)
        span.end()
        attributes.pop("server.port", None)  # kept off the metric: server.address suffices
        _duration.record(elapsed, attributes)


def rate_waited(provider: str, seconds: float) -> None:
    """A request waited ``seconds`` for its rate governor's slot."""
    if _rate_wait is not None:
        _rate_wait.record(seconds, {"audiencekit.provider": provider})


def rate_refused(provider: str) -> None:
    """The provider refused a request for its rate limit (429)."""
    if _refusals is not None:
        _refusals.add(1, {"audiencekit.provider": provider})


def count_ids(provider: str, result: Any) -> None:
    """Add a bulk call's :class:`~audiencekit.BulkResult` to the id counters."""
    if _applied is None:
        return
    attributes = {"audiencekit.provider": provider}
    _applied.add(result.applied, attributes)
    if result.failed:
        _failed.add(len(result.failed), attributes)
    if result.unknown:
        _unknown.add(len(result.unknown), attributes)


# -- bulk calls and workflow runs ----------------------------------------------------------------


class _Run:
    """The audiencekit span in progress in this context: the bulk calls inside a workflow run
    add their chunks and polls to it."""

    __slots__ = ("bulk", "chunks", "nested", "owner", "polls", "provider")

    def __init__(self, owner: object, provider: str, bulk: bool) -> None:
        self.owner = owner
        self.provider = provider
        #: A bulk call's span (not a workflow run's).
        self.bulk = bulk
        self.chunks = 0
        self.polls = 0
        #: Whether a traced call ran within this one (then that call counted the ids).
        self.nested = False


_current: contextvars.ContextVar[_Run | None] = contextvars.ContextVar(
    "audiencekit_telemetry_run", default=None
)


def _counts(value: Any, run: _Run) -> dict[str, int]:
    """The counts of a BulkResult, of a report holding one (``.result``), or of a report with
    its own ``applied`` / ``failed`` / ``unknown`` (chunks and polls then are those of the
    bulk calls made within the run)."""
    inner = getattr(value, "result", None)
    if inner is not None and hasattr(inner, "chunks"):
        value = inner
    applied = getattr(value, "applied", None)
    if not isinstance(applied, int):
        return {}
    return {
        "audiencekit.ids.applied": applied,
        "audiencekit.ids.failed": len(getattr(value, "failed", ())),
        "audiencekit.ids.unknown": len(getattr(value, "unknown", ())),
        "audiencekit.ids.pending": sum(len(c.ids) for c in getattr(value, "pending", ())),
        "audiencekit.chunks": getattr(value, "chunks", run.chunks),
        "audiencekit.polls": getattr(value, "polls", run.polls),
    }


def _argument(
    fn: Callable[..., Any], name: str
) -> Callable[[tuple[Any, ...], Mapping[str, Any]], Any]:
    import inspect  # only with OpenTelemetry: inspect takes milliseconds to import

    index = list(inspect.signature(fn).parameters).index(name)

    def get(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        return args[index] if index < len(args) else kwargs.get(name)

    return get


def traced(
    name: str, *, provider: str = "self", source: str | None = None, counts_ids: bool = True
) -> Callable[[F], F]:
    """Run the decorated coroutine function in an INTERNAL span ``name`` carrying the
    ``provider`` of the backend argument named ``provider`` (and of ``source``, as
    ``audiencekit.source.provider``) and the counts of what it returns (or of the ``result``
    an error carries). ``counts_ids`` marks a bulk call: a bulk call made within a bulk call
    of the same backend (``remove_members`` through ``apply``) is not traced again, and its
    ids go to the id counters unless a traced call within it counted them (a Mirror's calls
    to each backend). Without OpenTelemetry, the function unchanged."""

    def decorate(fn: F) -> F:
        if not ENABLED:
            return fn
        backend_of = _argument(fn, provider)
        source_of = _argument(fn, source) if source is not None else None

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            backend = backend_of(args, kwargs)
            outer = _current.get()
            if outer is not None and outer.bulk and outer.owner is backend:
                return await fn(*args, **kwargs)
            attributes = {"audiencekit.provider": str(getattr(backend, "provider", "?"))}
            if source_of is not None:
                attributes["audiencekit.source.provider"] = str(
                    getattr(source_of(args, kwargs), "provider", "?")
                )
            run = _Run(backend, attributes["audiencekit.provider"], counts_ids)
            with _span(name, attributes) as span:
                token = _current.set(run)
                try:
                    value = await fn(*args, **kwargs)
                except Exception as exc:
                    result = getattr(exc, "result", None)
                    failed = _counts(result, run)
                    if span.is_recording():
                        span.set_attributes({**failed, "error.type": type(exc).__name__})
                        span.set_status(_trace.StatusCode.ERROR)
                    _done(outer, run, failed, result if counts_ids else None)
                    raise
                finally:
                    _current.reset(token)
                counts = _counts(value, run)
                if span.is_recording():
                    span.set_attributes(counts)
                _done(outer, run, counts, value if counts_ids else None)
                return value

        return wrapper  # type: ignore[return-value]

    return decorate


def _done(outer: _Run | None, run: _Run, counts: Mapping[str, int], result: Any) -> None:
    """A traced call ended with ``counts``: tell the call it ran within, and count the ids of
    ``result`` (a bulk call's) unless a call within this one did."""
    if outer is not None:
        outer.nested = True
        if counts:
            outer.chunks += counts["audiencekit.chunks"]
            outer.polls += counts["audiencekit.polls"]
    if result is not None and counts and not run.nested:
        count_ids(run.provider, result)


@contextmanager
def _span(name: str, attributes: Mapping[str, str]) -> Iterator[Any]:
    # No exception event (its message may name ids) and no status description: error.type
    # carries the class name.
    with _tracer.start_as_current_span(
        name,
        kind=_trace.SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span
