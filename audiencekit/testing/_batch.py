"""A local emulator of Batch's Audience API 2.x: create, update, replace, remove, list, view.

It follows ``shared/provider-docs/batch-reference.md`` §12 and validates what it receives the way
``batch-openapi-excerpt.yaml`` describes. Writes are indexed asynchronously: a write is
``IN_PROGRESS`` until its token has been viewed ``index_polls`` times and ``index_delay`` seconds
have passed, then ``APPLIED`` (or ``REPLACED`` when a later replace overtook it). Every behaviour
the reference calls inferred is a field of :class:`BatchConfig`, commented as such.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ._app import EmulatorApp, ProviderError, arrived_at, json_response, request_json
from ._faults import FaultKind, FaultPlan

__all__ = ["DEFAULT_BATCH_KEY", "DEFAULT_BATCH_PROJECT", "BatchConfig", "BatchEmulator"]

DEFAULT_BATCH_KEY = "batch-emulator-rest-key"
DEFAULT_BATCH_PROJECT = "project_emulator"
VERSION_RE = re.compile(r"^2\.\d+$")
AUDIENCE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
TYPED_KEY_RE = re.compile(r"^(date|url)\((.*)\)$")
_PLAIN = frozenset({str, int, float, bool})


@attrs.define(kw_only=True)
class BatchConfig:
    """Settings of the emulator; the comment on each inferred one says what the reference says."""

    #: REST API keys accepted (``Authorization: Bearer <key>``).
    rest_keys: frozenset[str] = frozenset({DEFAULT_BATCH_KEY})
    #: Project keys accepted (``X-Batch-Project``); None accepts any non-empty one. Each project
    #: has its own audiences.
    projects: frozenset[str] | None = None
    #: A write is applied once its token was viewed this many times...
    index_polls: int = 0
    #: ...and this many seconds have passed since it arrived (both 0: applied at once).
    index_delay: float = 0.0
    #: Emit the update page's "IN_PROCESS" instead of "IN_PROGRESS" (never by default).
    emit_in_process: bool = False
    #: A field report, not documented Batch behaviour: the first this-many views of each
    #: indexing token answer 200 with ``stateless_value`` as the state (None: no
    #: ``indexing_state`` at all), then the real state. The views count as polls all the same.
    stateless_views: int = 0
    stateless_value: str | None = None
    #: Inferred: the status for creating a name that exists (T1's fixture says 409).
    duplicate_create_status: int = 409
    #: Inferred: the status for a write to an audience that does not exist (400 or 404).
    missing_audience_status: int = 404
    #: Inferred: attributes on a "remove" are refused (400) rather than ignored.
    reject_remove_attributes: bool = True
    #: Inferred: an empty ``ids`` array is refused.
    reject_empty_ids: bool = True
    #: Inferred from the SDK docs: attribute names are [A-Za-z0-9_], at most 30 characters.
    attribute_name_pattern: str | None = r"^[A-Za-z0-9_]{1,30}$"
    #: Inferred from the SDK docs (1024 on Android): the longest custom user id.
    max_id_length: int = 1024
    max_ids: int = 10_000
    max_attributes: int = 15
    default_list_limit: int = 10
    max_list_limit: int = 100
    #: A field report, not documented Batch behaviour: every list page answers the first
    #: page's audiences again and again, each time with a fresh ``next_from`` and no count.
    endless_pages: bool = False
    #: Inferred: a removed audience is gone at once. With this, a removal is indexed like
    #: other writes (``index_polls`` views of its token, ``index_delay``), and the audience
    #: stays visible, its removal token IN_PROGRESS, until then.
    index_removals: bool = False
    #: Third-party figure (1 request/s per project, a token bucket over every request, views
    #: included, answered 429 without Retry-After), unverified: off unless set.
    rate_limit: float | None = None
    rate_burst: int = 1
    #: Not Batch behaviour: add a Retry-After header to rate-limit answers.
    retry_after_header: bool = False
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)


@attrs.define
class _Write:
    token: str
    kind: str  # create | update | replace | remove
    ops: dict[str, dict[str, Any] | None]  # id → attributes (None: remove)
    received: float
    polls: int = 0
    state: str = "IN_PROGRESS"
    held: bool = False  # reorder fault: wait for the next request, then shuffle


@attrs.define
class _Audience:
    name: str
    display_name: str | None
    created: datetime
    updated: datetime
    members: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    writes: dict[str, _Write] = attrs.field(factory=dict)
    pending: list[_Write] = attrs.field(factory=list)
    last_token: str | None = None
    removed: bool = False  # its removal was indexed: drop it


@attrs.define
class _Project:
    audiences: dict[str, _Audience] = attrs.field(factory=dict)
    bucket: float = 0.0
    bucket_at: float = 0.0


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class BatchEmulator(EmulatorApp):
    """The Batch emulator as an ASGI app; its routes are ``/{2.x}/audiences/...``."""

    provider = "batch"

    def __init__(
        self,
        config: BatchConfig | None = None,
        *,
        faults: FaultPlan | None = None,
        log_bodies: bool = True,
    ) -> None:
        self.config = config or BatchConfig()
        self.projects: dict[str, _Project] = {}
        self._dirty: set[tuple[str, str]] = set()
        super().__init__(faults=faults, log_bodies=log_bodies)

    # -- EmulatorApp ----------------------------------------------------------------------------

    def connection(self, url: str) -> dict[str, Any]:
        config = self.config
        return {
            "base_url": url,
            "api_key": next(iter(sorted(config.rest_keys)), DEFAULT_BATCH_KEY),
            "project_key": next(iter(sorted(config.projects or ())), DEFAULT_BATCH_PROJECT),
        }

    def restore_defaults(self) -> None:
        self.config = BatchConfig()

    def routes(self) -> list[BaseRoute]:
        r = Route
        return [
            r("/{version}/audiences/create", self.create, methods=["POST"]),
            r("/{version}/audiences/update", self.update, methods=["POST"]),
            r("/{version}/audiences/replace", self.replace, methods=["POST"]),
            r("/{version}/audiences/remove", self.remove, methods=["POST"]),
            r("/{version}/audiences/list", self.list, methods=["GET"]),
            r("/{version}/audiences/view", self.view, methods=["GET"]),
        ]

    def error_body(self, request: Request, status: int, message: str, code: Any) -> Any:
        return {"error_code": str(code or self.default_code(status)), "error_message": message}

    def default_code(self, status: int) -> str:
        # Invented: Batch documents no error_code values for the 2.x audience API.
        return {
            400: "INVALID_PARAMETER",
            401: "AUTHENTICATION_INVALID",
            404: "ROUTE_NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            409: "AUDIENCE_ALREADY_EXISTS",
            429: "TOO_MANY_REQUESTS",
            503: "SERVICE_UNAVAILABLE",
        }.get(status, "SERVER_ERROR")

    def clear(self) -> None:
        self.projects.clear()
        self._dirty.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            key: {
                name: {
                    "display_name": a.display_name,
                    "nb_ids": len(a.members),
                    "members": a.members,
                    "pending": [w.token for w in a.pending],
                    "tokens": {t: self._state_name(w.state) for t, w in a.writes.items()},
                }
                for name, a in project.audiences.items()
            }
            for key, project in self.projects.items()
        }

    async def before(self, method: str, path: str) -> None:
        # Writes held by a reorder fault wait for the next read (list or view), so that writes
        # sent close together are applied together, in a shuffled order.
        with self.lock:
            self._apply_due(force_held=method == "GET")

    # -- Python inspection ----------------------------------------------------------------------

    def members(
        self, audience: str, project: str = DEFAULT_BATCH_PROJECT
    ) -> dict[str, dict[str, Any]]:
        """The applied members of an audience: id → attributes (a copy)."""
        with self.lock:
            found = self.projects.get(project, _Project()).audiences.get(audience)
            return {} if found is None else {k: dict(v) for k, v in found.members.items()}

    def apply_pending(self) -> None:
        """Apply every write now, whatever the indexing settings (for tests)."""
        with self.lock:
            for project, name in list(self._dirty):
                audience = self.projects[project].audiences.get(name)
                if audience is not None:
                    for write in list(audience.pending):
                        self._apply(audience, write)
                    if audience.removed:
                        del self.projects[project].audiences[name]
            self._dirty.clear()

    # -- plumbing -------------------------------------------------------------------------------

    def _project(self, request: Request) -> tuple[str, _Project]:
        version = request.path_params.get("version", "")
        if not VERSION_RE.match(version):
            raise ProviderError(404, f"No API version {version!r}", "ROUTE_NOT_FOUND")
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        project = request.headers.get("x-batch-project", "")
        allowed = self.config.projects
        if (
            scheme.lower() != "bearer"
            or key not in self.config.rest_keys
            or not project
            or (allowed is not None and project not in allowed)
        ):
            raise ProviderError(401, "The Rest API Key is not valid for this project")
        with self.lock:
            state = self.projects.setdefault(project, _Project())
            self._rate_limit(state, arrived_at(request.scope))
        return project, state

    def _rate_limit(self, project: _Project, now: float) -> None:
        """A token bucket per project, counting each request when it arrived (as a gateway
        would), not when this single-threaded emulator got round to it."""
        rate = self.config.rate_limit
        if rate is None:
            return
        burst = float(self.config.rate_burst)
        if project.bucket_at == 0.0:
            project.bucket = burst
        else:
            elapsed = max(0.0, now - project.bucket_at)
            project.bucket = min(burst, project.bucket + elapsed * rate)
        project.bucket_at = max(project.bucket_at, now)
        if project.bucket < 1.0:
            headers = {}
            if self.config.retry_after_header:
                headers["Retry-After"] = f"{(1.0 - project.bucket) / rate:.3f}"
            raise ProviderError(429, "Too Many Requests", **headers)
        project.bucket -= 1.0

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = request_json(await request.body())
        except ValueError:
            raise ProviderError(400, "The request is malformed: the body is not JSON") from None
        if not isinstance(body, dict):
            raise ProviderError(400, "The request is malformed: the body must be an object")
        return body

    def _name(self, body: Mapping[str, Any]) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ProviderError(400, "Missing or invalid parameter: name")
        return name

    def _audience(self, project: _Project, name: str, *, status: int) -> _Audience:
        audience = project.audiences.get(name)
        if audience is None:
            raise ProviderError(status, f"Audience {name!r} not found", "AUDIENCE_NOT_FOUND")
        return audience

    def _token(self) -> str:
        return secrets.token_hex(16)  # 32 hex characters, like the documented example

    def _state_name(self, state: str) -> str:
        if state == "IN_PROGRESS" and self.config.emit_in_process:
            return "IN_PROCESS"
        return state

    def _accept(self, key: str, audience: _Audience, write: _Write, path: str) -> Response:
        audience.writes[write.token] = write
        audience.pending.append(write)
        audience.last_token = write.token
        write.held = self.faults.has(FaultKind.REORDER, "POST", path)
        self._dirty.add((key, audience.name))
        self._apply_due(force_held=False)
        return json_response({"indexing_token": write.token}, 202)

    def _due(self, write: _Write, now: float) -> bool:
        config = self.config
        return write.polls >= config.index_polls and now - write.received >= config.index_delay

    def _apply_due(self, *, force_held: bool) -> None:
        if not self._dirty:
            return
        now = time.monotonic()
        for key, name in list(self._dirty):
            audience = self.projects[key].audiences.get(name)
            if audience is None:
                self._dirty.discard((key, name))
                continue
            due = [w for w in audience.pending if self._due(w, now) and (force_held or not w.held)]
            if any(w.held for w in due):
                self.faults.shuffle(due)
            for write in due:
                if write.state == "IN_PROGRESS":
                    self._apply(audience, write)
            if audience.removed:
                del self.projects[key].audiences[name]
            if not audience.pending or audience.removed:
                self._dirty.discard((key, name))

    def _apply(self, audience: _Audience, write: _Write) -> None:
        audience.pending.remove(write)
        if write.kind == "remove":
            audience.removed = True
        elif write.kind == "replace":
            for other in audience.writes.values():
                if other is not write and other.received <= write.received:
                    other.state = "REPLACED"
                    if other in audience.pending:
                        audience.pending.remove(other)
            audience.members = {k: v or {} for k, v in write.ops.items()}
        else:
            for member_id, attributes in write.ops.items():
                if attributes is None:
                    audience.members.pop(member_id, None)
                else:
                    audience.members[member_id] = attributes
        write.state = "APPLIED"
        audience.updated = self.config.now()

    # -- validation of ids ----------------------------------------------------------------------

    def _ids(self, body: Mapping[str, Any], *, with_action: bool) -> dict[str, Any]:
        config = self.config
        ids = body.get("ids")
        if not isinstance(ids, list):
            raise ProviderError(400, "Missing or invalid parameter: ids")
        if len(ids) > config.max_ids:
            raise ProviderError(400, f"ids supports up to {config.max_ids:,} elements")
        if not ids and config.reject_empty_ids:
            raise ProviderError(400, "ids must not be empty")
        keys: dict[str, str | None] = {}  # attribute key → its type prefix, checked once a call
        ops: dict[str, dict[str, Any] | None] = {}
        max_length = config.max_id_length
        for index, item in enumerate(ids):
            if type(item) is not dict:
                raise ProviderError(400, f"ids[{index}] must be an object")
            member_id = item.get("id")
            if type(member_id) is not str or not member_id or len(member_id) > max_length:
                raise ProviderError(400, f"ids[{index}].id must be a string of 1 to {max_length}")
            if with_action:  # required on update (the OpenAPI excerpt: [action, id])
                action = item.get("action")
                if action != "add" and action != "remove":
                    raise ProviderError(400, f"ids[{index}].action is required: 'add' or 'remove'")
            elif "action" in item:
                raise ProviderError(400, f"ids[{index}].action is not accepted by replace")
            else:
                action = "add"
            attributes = item.get("attributes")
            ops.pop(member_id, None)  # last action per id wins, and takes the last place
            if action == "remove":
                if attributes is not None and config.reject_remove_attributes:
                    raise ProviderError(400, f"ids[{index}].attributes: only for the add action")
                ops[member_id] = None
            elif attributes is None:
                ops[member_id] = {}
            else:
                ops[member_id] = self._attributes(attributes, index, keys)
        return ops

    def _attributes(
        self, attributes: Any, index: int, keys: dict[str, str | None]
    ) -> dict[str, Any]:
        if type(attributes) is not dict:
            raise ProviderError(400, f"ids[{index}].attributes must be an object")
        if len(attributes) > self.config.max_attributes:
            raise ProviderError(
                400, f"ids[{index}].attributes supports up to {self.config.max_attributes}"
            )
        for key, value in attributes.items():
            if key in keys:
                kind = keys[key]
            else:
                kind = keys[key] = self._attribute_kind(key, f"ids[{index}].attributes")
            if kind is None:
                if type(value) in _PLAIN or (
                    type(value) is list and all(type(v) is str for v in value)
                ):
                    continue
                raise ProviderError(400, f"ids[{index}].{key}: unsupported value {value!r:.40}")
            if kind == "date":
                if not isinstance(value, str) or not _is_rfc3339(value):
                    raise ProviderError(400, f"ids[{index}].{key}: not an RFC 3339 date")
            elif not isinstance(value, str) or not value.startswith(("http://", "https://")):
                raise ProviderError(400, f"ids[{index}].{key}: not a URL")
        return attributes

    def _attribute_kind(self, key: str, where: str) -> str | None:
        typed = TYPED_KEY_RE.match(key)
        kind, name = (typed.group(1), typed.group(2)) if typed else (None, key)
        pattern = self.config.attribute_name_pattern
        if pattern is not None and not re.match(pattern, name):
            raise ProviderError(400, f"{where}: invalid attribute name {key!r}")
        return kind

    # -- routes ---------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        key, project = self._project(request)
        body = await self._body(request)
        name = self._name(body)
        if not AUDIENCE_NAME_RE.match(name):
            raise ProviderError(400, "name may hold letters, digits, '_' and '-', up to 255")
        if body.get("type") != "custom_ids":
            raise ProviderError(400, "type must be 'custom_ids'")
        display = body.get("display_name")
        if display is not None and not isinstance(display, str):
            raise ProviderError(400, "display_name must be a string")
        with self.lock:
            if name in project.audiences:
                raise ProviderError(
                    self.config.duplicate_create_status,
                    f"Audience {name!r} already exists",
                    "AUDIENCE_ALREADY_EXISTS",
                )
            now = self.config.now()
            audience = _Audience(name, display, now, now)
            project.audiences[name] = audience
            write = _Write(self._token(), "create", {}, time.monotonic())
            return self._accept(key, audience, write, request.url.path)

    async def update(self, request: Request) -> Response:
        key, project = self._project(request)
        body = await self._body(request)
        name = self._name(body)
        ops = self._ids(body, with_action=True)
        with self.lock:
            audience = self._audience(project, name, status=self.config.missing_audience_status)
            write = _Write(self._token(), "update", ops, time.monotonic())
            return self._accept(key, audience, write, request.url.path)

    async def replace(self, request: Request) -> Response:
        key, project = self._project(request)
        body = await self._body(request)
        name = self._name(body)
        ops = self._ids(body, with_action=False)
        with self.lock:
            audience = self._audience(project, name, status=self.config.missing_audience_status)
            write = _Write(self._token(), "replace", ops, time.monotonic())
            return self._accept(key, audience, write, request.url.path)

    async def remove(self, request: Request) -> Response:
        key, project = self._project(request)
        body = await self._body(request)
        name = self._name(body)
        with self.lock:
            audience = self._audience(project, name, status=self.config.missing_audience_status)
            if self.config.index_removals:
                write = _Write(self._token(), "remove", {}, time.monotonic())
                return self._accept(key, audience, write, request.url.path)
            # Assumed: the audience is gone at once (the token is reported APPLIED by nothing,
            # since view needs the audience's name).
            del project.audiences[name]
            self._dirty.discard((key, name))
        return json_response({"indexing_token": self._token()}, 202)

    async def list(self, request: Request) -> Response:
        _, project = self._project(request)
        params = request.query_params
        raw_limit = params.get("limit")
        try:
            limit = int(raw_limit) if raw_limit else self.config.default_list_limit
        except ValueError:
            raise ProviderError(400, "limit must be an integer") from None
        if not 1 <= limit <= self.config.max_list_limit:
            raise ProviderError(400, f"limit must be between 1 and {self.config.max_list_limit}")
        cursor = params.get("from")
        offset = _decode_cursor(cursor) if cursor else 0
        endless = self.config.endless_pages
        with self.lock:
            # Assumed: newest first, as the 1.0 list was.
            audiences = sorted(project.audiences.values(), key=lambda a: a.created, reverse=True)
            first = 0 if endless else offset
            page = [self._audience_json(a) for a in audiences[first : first + limit]]
        has_more = endless or offset + limit < len(audiences)
        data: dict[str, Any] = {"audiences": page, "has_more": has_more}
        if cursor is None and not endless:
            data["count"] = len(audiences)
        if has_more:
            data["next_from"] = _encode_cursor(offset + limit)
        return json_response(data)

    async def view(self, request: Request) -> Response:
        _, project = self._project(request)
        name = request.query_params.get("name")
        if not name:
            raise ProviderError(400, "Missing parameter: name")
        token = request.query_params.get("indexing_token")
        state = None  # without a token: the state of the last write, as documented
        stateless = False
        with self.lock:
            audience = self._audience(project, name, status=404)
            if token:
                write = audience.writes.get(token)
                if write is None:
                    # Assumed: an unknown or foreign token is "not found".
                    raise ProviderError(404, f"Unknown indexing token {token!r}", "TOKEN_NOT_FOUND")
                write.polls += 1
                self._apply_due(force_held=True)
                state = write.state
                stateless = write.polls <= self.config.stateless_views
            data = self._audience_json(audience, state)
            if stateless:
                data.pop("indexing_state")
                if self.config.stateless_value is not None:
                    data["indexing_state"] = self.config.stateless_value
            return json_response(data)

    def _audience_json(self, audience: _Audience, state: str | None = None) -> dict[str, Any]:
        if state is None:
            last = audience.writes.get(audience.last_token or "")
            state = last.state if last is not None else "APPLIED"
        data: dict[str, Any] = {
            "name": audience.name,
            "type": "CUSTOM_ID",
            "nb_ids": len(audience.members),
            "indexing_state": self._state_name(state),
            "created": _rfc3339(audience.created),
            "updated": _rfc3339(audience.updated),
        }
        if audience.display_name is not None:
            data["display_name"] = audience.display_name
        return data


def _is_rfc3339(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in value.upper() and parsed.tzinfo is not None


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"c{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    if not raw.startswith("c") or not raw[1:].isdigit():
        raise ProviderError(400, "Invalid parameter: from")
    return int(raw[1:])
