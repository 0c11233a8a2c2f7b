"""Every exception audiencekit raises, in one tree.

::

    AudienceKitError
     ├── ConfigurationError            bad client settings (missing key, bad base URL, ...)
     │    ├── CheckpointError          a migration's checkpoint: resume it, or clear it
     │    └── RunHistoryError          a recorded run: not found, ambiguous, another account's
     ├── ValidationError(ValueError)   bad input, found before anything was sent
     │    └── UnsupportedFeatureError  the backend cannot do what was asked
     ├── APIError                      something went wrong talking to the provider
     │    ├── APIConnectionError       no usable response (refused, reset, dropped)
     │    │    └── APITimeoutError     the request timed out
     │    ├── APIStatusError           the provider answered with an error status
     │    │    ├── BadRequestError          400 (and other 4xx without a class of their own)
     │    │    ├── AuthenticationError      401
     │    │    ├── PermissionDeniedError    403
     │    │    ├── NotFoundError            404
     │    │    ├── ConflictError            409
     │    │    ├── RateLimitError           429
     │    │    └── InternalServerError      5xx
     │    ├── UnexpectedResponseError  a 2xx whose body cannot be used (a write may have happened)
     │    ├── PaginationError          the provider's paging went wrong (a repeated page token)
     │    └── WriteReplacedError       the provider dropped a write: a replace overtook it
     ├── AudienceBusyError             another run is writing the audience (its lease is held)
     │    └── FencingError             this run's lease was taken over: nothing more is written
     ├── StateStoreError               the state store cannot be used (names where, and why)
     │    ├── StateStoreCorruptError   not a state store, or a damaged one
     │    ├── StateStoreVersionError   written by a newer audiencekit
     │    ├── StateStoreAccessError    cannot be opened or written (permissions, read-only)
     │    ├── StateStoreLockedError    another process holds it locked past the timeout
     │    └── StateStoreConnectionError a store server cannot be reached, refused us, or went away
     ├── PartialFailureError           a bulk call finished, but some ids did not make it
     ├── WriterStoppedError            an AudienceWriter stopped; carries what it never sent
     └── PollTimeoutError(TimeoutError) accepted writes not confirmed; carries them, to resume

No exception holds an API key, an auth header or an ``httpx.Request``: they are safe to log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .models import BulkResult, Operation, PendingChunk

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AudienceBusyError",
    "AudienceKitError",
    "AuthenticationError",
    "BadRequestError",
    "CheckpointError",
    "ConfigurationError",
    "ConflictError",
    "ErrorDetail",
    "FencingError",
    "InternalServerError",
    "NotFoundError",
    "PaginationError",
    "PartialFailureError",
    "PermissionDeniedError",
    "PollTimeoutError",
    "Problem",
    "RateLimitError",
    "RunHistoryError",
    "StateStoreAccessError",
    "StateStoreConnectionError",
    "StateStoreCorruptError",
    "StateStoreError",
    "StateStoreLockedError",
    "StateStoreVersionError",
    "UnexpectedResponseError",
    "UnsupportedFeatureError",
    "ValidationError",
    "WriteReplacedError",
    "WriterStoppedError",
    "by_cause",
    "may_have_taken_effect",
    "status_error_class",
]

#: How many problems an error message spells out before it says "and N more".
_MAX_LISTED = 20
#: How many distinct causes of a partial failure its message spells out, per bucket.
_MAX_CAUSES = 5


class AudienceKitError(Exception):
    """The base of every error audiencekit raises."""


class ConfigurationError(AudienceKitError):
    """The client was set up wrongly: a missing key, a malformed base URL, a bad limit."""


class CheckpointError(ConfigurationError):
    """A migration run's checkpoint disagrees with the call: an earlier run of ``run`` was
    interrupted (``interrupted``; resume it, or clear its checkpoint to start over), or there is
    no checkpoint to resume."""

    def __init__(self, message: str, *, run: str, interrupted: bool) -> None:
        super().__init__(message)
        self.run = run
        self.interrupted = interrupted


class RunHistoryError(ConfigurationError):
    """A run of the state store's history cannot be used as asked: no run has the id ``run``
    (or an id starting with it), several do (``candidates``: their ids; give more of it), or it
    is the run of another provider or account than the backend's (``scope``: the run's)."""

    def __init__(
        self,
        message: str,
        *,
        run: str,
        candidates: Sequence[str] = (),
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.run = run
        self.candidates = tuple(candidates)
        self.scope = scope


@attrs.frozen
class Problem:
    """One thing wrong with the input: which item (``id``, when it has one), which field, why."""

    message: str
    id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (
                f"id {self.id!r}" if self.id is not None else "",
                f"field {self.field!r}" if self.field is not None else "",
            )
            if part
        )
        return f"{where}: {self.message}" if where else self.message


class ValidationError(AudienceKitError, ValueError):
    """The input is invalid; raised before any request carrying it is sent.

    ``problems`` lists every problem found, each with the id it concerns, so a caller can fix or
    drop exactly those items.
    """

    problems: tuple[Problem, ...]
    #: Set when a streamed bulk call met bad input after sending earlier chunks: what they did.
    result: BulkResult | None = None

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("ValidationError needs at least one problem")
        super().__init__(_describe(self.problems))

    @property
    def ids(self) -> tuple[str, ...]:
        """The distinct ids named by the problems, in the order first named."""
        return tuple(dict.fromkeys(p.id for p in self.problems if p.id is not None))


def _describe(problems: Sequence[Problem]) -> str:
    if len(problems) == 1:
        return str(problems[0])
    lines = [f"{len(problems)} problems:"]
    lines += [f"  - {p}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more (see .problems)")
    return "\n".join(lines)


class UnsupportedFeatureError(ValidationError):
    """The backend cannot do this (see its ``capabilities``); nothing was sent."""

    def __init__(self, provider: str, feature: str, hint: str = "") -> None:
        self.provider = provider
        self.feature = feature
        message = f"{provider} does not support {feature}"
        super().__init__([Problem(f"{message}. {hint}".strip() if hint else message)])


class APIError(AudienceKitError):
    """A failure while talking to a provider.

    ``provider`` names it, ``request_id`` is the provider's id for the request when it sent one,
    ``body`` is the parsed (or raw) error body, with any known secret removed.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        request_id: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.request_id = request_id
        self.body = body


class APIConnectionError(APIError):
    """No usable response arrived: the connection was refused, reset or dropped.

    ``request_sent`` is False only when the request certainly never reached the provider (the
    connection could not be opened), which makes even a non-idempotent call safe to send again.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        request_sent: bool = True,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, request_id=request_id)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, write, read or waiting for a pooled connection)."""


class APIStatusError(APIError):
    """The provider answered with an error status.

    ``status`` is the HTTP status, ``code`` the provider's own error code (Dexatel's number, Batch's
    ``error_code`` string) when the body had one, ``retry_after`` the seconds the provider asked us
    to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int,
        code: str | int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message, provider=provider, request_id=request_id, body=body)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self._cause()}{rid}"

    def _cause(self) -> str:
        """What went wrong, without the request id (which differs between requests that failed
        alike: :func:`by_cause` groups by this)."""
        code = f" [{self.code}]" if self.code is not None else ""
        return f"{self.provider} answered {self.status}{code}: {self.message}"


@attrs.frozen
class ErrorDetail:
    """What a provider's error body says: a message, the provider's code, and, when the code says
    more than the status (Dexatel answers some conflicts with 400), the exception class to use."""

    message: str
    code: str | int | None = None
    kind: type[APIStatusError] | None = None


class BadRequestError(APIStatusError):
    """400, and any other 4xx without a class of its own: the provider refused the request."""


class AuthenticationError(APIStatusError):
    """401: the key is missing, wrong, or not valid for this project."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not do this."""


class NotFoundError(APIStatusError):
    """404, or a provider code that means "not found"."""


class ConflictError(APIStatusError):
    """409, or a provider code that means "already exists"."""


class RateLimitError(APIStatusError):
    """429: too many requests; ``retry_after`` says how long the provider asked us to wait."""


class InternalServerError(APIStatusError):
    """5xx: the provider failed; the request may or may not have taken effect."""


class UnexpectedResponseError(APIError):
    """The provider answered a success whose body cannot be used (not JSON, a field missing).
    For a write the request may well have taken effect: its ids are reported ``unknown``."""


class PaginationError(APIError):
    """The provider's paging misbehaved (a page token came back twice, pages that bring nothing
    new); iterating stopped. ``cursor`` is the last page token the provider handed back."""

    def __init__(self, message: str, *, provider: str, cursor: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.cursor = cursor


class WriteReplacedError(APIError):
    """The provider reports the write as overtaken by a later replace (Batch ``REPLACED``): its
    ids may or may not hold what it said. ``handle`` is the write's indexing token."""

    def __init__(self, message: str, *, provider: str, handle: str) -> None:
        super().__init__(message, provider=provider)
        self.handle = handle


def may_have_taken_effect(error: BaseException) -> bool:
    """Whether a failed call may still have taken effect at the provider: the one rule the
    transport (what to retry), the bulk engine (``unknown`` rather than ``failed``) and
    ``create_once`` (look before creating again) share. A connection lost after sending, a
    5xx, a 408, a status check that ran out, or a 2xx that cannot be read: yes. A 4xx, a 429,
    a connection that never opened: no, nothing happened."""
    if isinstance(error, APIConnectionError):
        return error.request_sent
    if isinstance(error, APIStatusError):
        return isinstance(error, InternalServerError) or error.status == 408
    return isinstance(error, (PollTimeoutError, UnexpectedResponseError))


_STATUS_CLASSES: Mapping[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, BadRequestError if status >= 400 else APIStatusError)


class AudienceBusyError(AudienceKitError):
    """Another run (another process, or another task) holds the audience's lease in the state
    store: a sync, migrate or writer never interleaves with another on one audience. ``holder``
    names it (host:pid:token) and ``expires_in`` says when its lease runs out unless renewed;
    ``lost`` is True when this run's own lease was taken over (it stalled past the lease's
    time) and the run was stopped."""

    def __init__(
        self, audience: str, holder: str | None, expires_in: float, *, lost: bool = False
    ) -> None:
        self.audience = audience
        self.holder = holder
        self.expires_in = expires_in
        self.lost = lost
        if lost:
            message = (
                f"this run lost its lease on {audience}: it stalled past the lease's time and "
                "another run may have taken over; run it again"
            )
        else:
            message = (
                f"another run is writing {audience} ({holder}; its lease runs out in "
                f"{expires_in:.0f} s unless renewed): wait for it to finish"
            )
        super().__init__(message)


class StateStoreError(AudienceKitError):
    """The state store cannot be used. ``location`` names it (a path, or a URL without its
    password) and ``reason`` says why; nothing was written to it by the failing call."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"the state store {location} cannot be used: {reason}")


class StateStoreCorruptError(StateStoreError):
    """The store is not a state store, or a damaged one (random bytes, a truncated file). It is
    left as it is: move it aside (or restore a copy) and run again."""


class StateStoreVersionError(StateStoreError):
    """The store was written by a newer audiencekit: its schema is unknown to this version."""


class StateStoreAccessError(StateStoreError):
    """The store cannot be opened or written: permissions, a read-only file or folder, a folder
    where the file should be, a missing parent folder."""


class StateStoreLockedError(StateStoreError):
    """Another process held the store locked for longer than the timeout."""


class StateStoreConnectionError(StateStoreError):
    """A store server could not be reached, refused the credentials, or went away mid-run."""


class FencingError(AudienceBusyError):
    """This run no longer holds the audience's lease: it stalled (paused, partitioned) past
    the lease's time, and another run may have taken over. The store refused the write it
    tried (nothing was written), and nothing more is sent; run it again."""

    def __init__(self, audience: str, reason: str) -> None:
        super().__init__(audience, None, 0.0, lost=True)
        self.reason = reason
        self.args = (f"this run lost its lease on {audience}: {reason}; run it again",)


def by_cause(outcomes: Mapping[str, BaseException | str]) -> list[tuple[str, list[str]]]:
    """The ids of ``outcomes`` (id -> its error) grouped by what went wrong, largest group
    first: one line per cause is how a failure of many ids reads. A status error's cause
    leaves out its request id, which differs between requests that failed alike."""
    groups: dict[str, list[str]] = {}
    for member_id, error in outcomes.items():
        cause = error._cause() if isinstance(error, APIStatusError) else str(error)
        groups.setdefault(cause, []).append(member_id)
    return sorted(groups.items(), key=lambda group: -len(group[1]))


class PartialFailureError(AudienceKitError):
    """A bulk call finished but not every id was applied; ``result`` says exactly which were not,
    and the message why (each cause, with how many ids it struck and a few of them)."""

    def __init__(self, result: BulkResult) -> None:
        self.result = result
        parts = [f"{len(result.failed):,} failed", f"{len(result.unknown):,} unknown"]
        if result.pending:
            parts.append(f"{result.pending_count:,} pending")
        applied = f"{result.applied:,} applied"
        lines = [f"bulk call did not apply every id: {applied}, {', '.join(parts)}"]
        for bucket, outcomes in (("failed", result.failed), ("unknown", result.unknown)):
            for cause, ids in by_cause(outcomes)[:_MAX_CAUSES]:
                sample = ", ".join(map(repr, ids[:3])) + (", ..." if len(ids) > 3 else "")
                lines.append(f"  {len(ids):,} {bucket}: {cause} (e.g. {sample})")
        super().__init__("\n".join(lines))


class WriterStoppedError(AudienceKitError):
    """An :class:`~audiencekit.AudienceWriter` stopped because a bulk call raised (the error is
    ``__cause__``); ``unsent`` holds, in order, every operation it had queued and never sent."""

    def __init__(self, cause: BaseException, *, unsent: Sequence[Operation]) -> None:
        self.unsent = tuple(unsent)
        super().__init__(f"the writer stopped: {cause}")

    def __str__(self) -> str:
        return f"{self.args[0]} ({len(self.unsent):,} queued operation(s) not sent: see .unsent)"


class PollTimeoutError(AudienceKitError, TimeoutError):
    """Writes the provider accepted were not confirmed applied: waiting passed ``max_wait``, or
    checking their state kept failing (``causes`` says why, by handle). Nothing is lost:
    pass this error (or its ``result``, or its ``pending``) to the backend's ``wait()`` to
    resume."""

    def __init__(
        self,
        message: str,
        *,
        pending: Sequence[PendingChunk | str],
        waited: float,
        result: BulkResult | None = None,
        causes: Mapping[str, AudienceKitError] | None = None,
    ) -> None:
        super().__init__(message)
        chunks = tuple(item for item in pending if not isinstance(item, str))
        #: The accepted, unconfirmed chunks: their handles, audience and ids.
        self.pending: tuple[PendingChunk, ...] = chunks
        #: The handles still unconfirmed (also of things that are not chunks: a campaign id).
        self.handles: tuple[str, ...] = tuple(
            item if isinstance(item, str) else item.handle for item in pending
        )
        self.waited = waited
        #: For a bulk call: everything else it did, with the unconfirmed chunks in ``pending``.
        self.result = result
        #: Why a handle is unconfirmed, when it is not the deadline: the last error checking it.
        self.causes: Mapping[str, AudienceKitError] = dict(causes or {})
