"""Acme: a third provider, written only against audiencekit's public extension API.

It proves the seam: nothing in ``audiencekit/`` knows of it. Acme's (invented) API keeps lists of
members with up to 5 traits; writes are jobs of at most 500 upserts and deletes, applied after
the job is viewed ``polls_to_apply`` times (so writes are deferred, like Batch's); lists and
their members are listed page by page. Ids are 1 to 64 characters, case-insensitive: Acme stores
them lowercased, so ``canonical`` keys operations by the lowercased id.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs
import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from audiencekit import Add, Audience, Channel, Member, Operation, Remove, ValidationError
from audiencekit.errors import Problem
from audiencekit.providers.base import (
    AsyncPager,
    BaseBackend,
    CallStats,
    Capabilities,
    ChunkOutcome,
    ChunkWriter,
    ErrorDetail,
    Page,
    Poller,
    PollPolicy,
    Provider,
    ProviderClient,
    RetryPolicy,
    Transport,
    credential,
)
from audiencekit.testing import EmulatorApp, ProviderError, json_response, request_json

ACME_KEY = "acme-emulator-token-0042"
MAX_JOB = 500
MAX_TRAITS = 5
MAX_ID = 64


# -- the emulator ---------------------------------------------------------------------------------


@attrs.define
class _List:
    id: str
    name: str
    created: datetime
    members: dict[str, dict[str, Any]] = attrs.field(factory=dict)


@attrs.define
class _Job:
    list_id: str
    upsert: list[dict[str, Any]]
    delete: list[str]
    views_left: int
    done: bool = False


class AcmeEmulator(EmulatorApp):
    """Acme's API on ``/v2``: lists, jobs that apply after being viewed, paged listings."""

    provider = "acme"
    url_path = "/v2"

    def __init__(self, *, polls_to_apply: int = 1) -> None:
        self.polls_to_apply = polls_to_apply
        #: Ids a job is refused for, whole (400), like a server-side rule the client cannot see.
        self.refused: set[str] = set()
        self.lists: dict[str, _List] = {}
        self.jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)
        super().__init__()

    def connection(self, url: str) -> dict[str, Any]:
        return {"base_url": url, "api_key": ACME_KEY}

    def restore_defaults(self) -> None:
        self.polls_to_apply = 1
        self.refused = set()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/lists", self.list_lists, methods=["GET"]),
            Route("/v2/lists", self.create_list, methods=["POST"]),
            Route("/v2/lists/{lid}", self.get_list, methods=["GET"]),
            Route("/v2/lists/{lid}", self.delete_list, methods=["DELETE"]),
            Route("/v2/lists/{lid}/jobs", self.create_job, methods=["POST"]),
            Route("/v2/lists/{lid}/members", self.list_members, methods=["GET"]),
            Route("/v2/jobs/{jid}", self.get_job, methods=["GET"]),
        ]

    def error_body(self, request: Request, status: int, message: str, code: Any) -> Any:
        return {"error": {"message": message, "code": code or status}}

    def snapshot(self) -> dict[str, Any]:
        return {lid: {"name": lst.name, "members": lst.members} for lid, lst in self.lists.items()}

    def clear(self) -> None:
        self.lists.clear()
        self.jobs.clear()

    def members(self, list_id: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: dict(v) for k, v in self.lists[list_id].members.items()}

    # -- routes ---------------------------------------------------------------------------------

    def _auth(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Token {ACME_KEY}":
            raise ProviderError(401, "bad token")

    def _list(self, lid: str) -> _List:
        found = self.lists.get(lid)
        if found is None:
            raise ProviderError(404, f"no list {lid}", "list_not_found")
        return found

    @staticmethod
    def _shown(lst: _List) -> dict[str, Any]:
        return {
            "id": lst.id,
            "name": lst.name,
            "size": len(lst.members),
            "created_at": lst.created.isoformat(),
        }

    @staticmethod
    def _page(items: list[Any], request: Request, key: str) -> Response:
        start = int(request.query_params.get("page_token") or 0)
        more = start + 50 < len(items)
        return json_response(
            {key: items[start : start + 50], "next": str(start + 50) if more else None}
        )

    async def list_lists(self, request: Request) -> Response:
        self._auth(request)
        with self.lock:
            shown = [self._shown(lst) for lst in self.lists.values()]
        return self._page(shown, request, "lists")

    async def create_list(self, request: Request) -> Response:
        self._auth(request)
        body = request_json(await request.body())
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ProviderError(400, "name is required")
        with self.lock:
            if any(lst.name == name for lst in self.lists.values()):
                raise ProviderError(409, f"list {name!r} exists", "list_exists")
            lst = _List(uuid.uuid4().hex, name, datetime.now(timezone.utc))
            self.lists[lst.id] = lst
            return json_response(self._shown(lst), 201)

    async def get_list(self, request: Request) -> Response:
        self._auth(request)
        with self.lock:
            return json_response(self._shown(self._list(request.path_params["lid"])))

    async def delete_list(self, request: Request) -> Response:
        self._auth(request)
        with self.lock:
            self._list(request.path_params["lid"])
            del self.lists[request.path_params["lid"]]
        return Response(status_code=204)

    async def create_job(self, request: Request) -> Response:
        self._auth(request)
        body = request_json(await request.body())
        upsert, delete = body.get("upsert", []), body.get("delete", [])
        if len(upsert) + len(delete) > MAX_JOB:
            raise ProviderError(400, f"a job holds at most {MAX_JOB} changes")
        for member in upsert:
            if len(member.get("traits", {})) > MAX_TRAITS or len(member["id"]) > MAX_ID:
                raise ProviderError(400, f"member {member['id'][:70]!r} refused")
        if self.refused.intersection(m["id"] for m in upsert):
            raise ProviderError(400, "a member of this job is refused")
        with self.lock:
            self._list(request.path_params["lid"])
            jid = f"job-{next(self._ids)}"
            self.jobs[jid] = _Job(request.path_params["lid"], upsert, delete, self.polls_to_apply)
        return json_response({"job_id": jid}, 202)

    async def get_job(self, request: Request) -> Response:
        self._auth(request)
        with self.lock:
            job = self.jobs.get(request.path_params["jid"])
            if job is None:
                raise ProviderError(404, "no such job")
            job.views_left -= 1
            if not job.done and job.views_left <= 0:
                job.done = True
                lst = self.lists.get(job.list_id)
                if lst is not None:
                    for member in job.upsert:
                        lst.members[member["id"].lower()] = dict(member.get("traits", {}))
                    for gone in job.delete:
                        lst.members.pop(gone.lower(), None)
            return json_response({"status": "done" if job.done else "running"})

    async def list_members(self, request: Request) -> Response:
        self._auth(request)
        with self.lock:
            lst = self._list(request.path_params["lid"])
            shown = [{"id": k, "traits": v} for k, v in lst.members.items()]
        return self._page(shown, request, "members")


# -- the client and the backend -------------------------------------------------------------------


def _error_detail(response: httpx.Response, body: Any) -> ErrorDetail:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return ErrorDetail(
            str(body["error"].get("message")), code=None if code is None else str(code)
        )
    return ErrorDetail(response.reason_phrase)


class AcmeClient(ProviderClient):
    """Acme's calls, one request each, on the core's transport (retries, rate, shield)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str = "https://api.acme.test/v2",
        **options: Any,
    ) -> None:
        key = credential(api_key, "ACME_API_KEY", "Acme API token (api_key=)")
        self.transport = Transport(
            provider="acme",
            base_url=base_url,
            auth_headers={"Authorization": f"Token {key}"},
            parse_error=_error_detail,
            **options,
        )

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; reads, deletes and jobs are safe to send again, a create is not."""
        kwargs.setdefault("replay_safe", method != "POST")
        response = await self.transport.request(method, path, **kwargs)
        return self.transport.read_json(response) if response.content else None


class AcmeBackend(BaseBackend):
    """Acme lists as an :class:`~audiencekit.AudienceBackend`."""

    provider = "acme"
    capabilities = Capabilities(
        list_members=True,
        rename=False,
        replace=False,
        campaigns=False,
        deferred_writes=True,
        max_batch=MAX_JOB,
        max_attributes=MAX_TRAITS,
    )

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str = "https://api.acme.test/v2",
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        chunk_size: int = MAX_JOB,
        concurrency: int = 4,
        **options: Any,
    ) -> None:
        self.client = AcmeClient(api_key=api_key, base_url=base_url, retry=retry, **options)
        policy = poll or PollPolicy(max_wait=60, interval=0.01, max_interval=0.2)
        self.poller = Poller(policy, sleep=options.get("sleep"), clock=options.get("clock"))
        self.chunk_size = chunk_size
        self.concurrency = concurrency

    @staticmethod
    def _audience(found: Mapping[str, Any]) -> Audience:
        return Audience(
            id=found["id"],
            name=found["name"],
            provider="acme",
            size=found["size"],
            created_at=datetime.fromisoformat(found["created_at"]),
        )

    async def new_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        return self._audience(await self.client.json("POST", "/lists", json={"name": name}))

    async def get_audience(self, audience_id: str) -> Audience:
        return self._audience(await self.client.json("GET", f"/lists/{audience_id}"))

    async def delete_audience(self, audience_id: str) -> None:
        await self.client.json("DELETE", f"/lists/{audience_id}", replay_safe=True)

    def list_audiences(self) -> AsyncPager[Audience]:
        async def fetch(token: str | None) -> Page[Audience]:
            body = await self.client.json("GET", "/lists", params={"page_token": token or ""})
            return Page([self._audience(a) for a in body["lists"]], body["next"])

        return AsyncPager(fetch, provider="acme", what="lists")

    async def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        token: str | None = ""
        while token is not None:
            body = await self.client.json(
                "GET", f"/lists/{audience_id}/members", params={"page_token": token}
            )
            for found in body["members"]:
                yield Member(found["id"], attributes=found["traits"])
            token = body["next"]

    def refine(self, operation: Operation) -> Operation:
        problems = _problems(operation)
        if problems:
            raise ValidationError(problems)
        return _lowered(operation)

    def chunk_writer(self, audience_id: str) -> ChunkWriter[Operation]:
        return _JobWriter(self, audience_id)


def _lowered(op: Operation) -> Operation:
    """Acme's canonical form: the id lowercased."""
    if op.id == op.id.lower():
        return op
    if isinstance(op, Remove):
        return Remove(op.id.lower())
    return Add(Member(op.id.lower(), attributes=op.member.attributes))


def _problems(op: Operation) -> list[Problem]:
    problems = []
    if len(op.id) > MAX_ID:
        problems.append(Problem(f"longer than {MAX_ID} characters", id=op.id[:40]))
    if isinstance(op, Add) and len(op.member.attributes) > MAX_TRAITS:
        problems.append(Problem(f"at most {MAX_TRAITS} traits", id=op.id, field="attributes"))
    return problems


class _JobWriter(ChunkWriter[Operation]):
    """A chunk is one job; each job is viewed until done."""

    def __init__(self, backend: AcmeBackend, audience_id: str) -> None:
        super().__init__(audience_id)
        self.canonical = _lowered
        self.client = backend.client
        self.chunk_size = backend.chunk_size
        self.concurrency = backend.concurrency
        self.poller = backend.poller

    def encode(self, ops: Mapping[str, Operation]) -> Mapping[str, Operation]:
        problems = [p for op in ops.values() for p in _problems(op)]
        if problems:
            raise ValidationError(problems)
        return ops

    async def send(self, entries: Mapping[str, Operation], stats: CallStats) -> ChunkOutcome:
        upsert = [
            {"id": op.id, "traits": dict(op.member.attributes)}
            for op in entries.values()
            if isinstance(op, Add)
        ]
        delete = [op.id for op in entries.values() if isinstance(op, Remove)]
        body = await self.client.json(
            "POST",
            f"/lists/{self.audience_id}/jobs",
            json={"upsert": upsert, "delete": delete},
            replay_safe=True,  # a job upserts and deletes: sending it twice changes nothing
            stats=stats,
        )
        return ChunkOutcome(handle=body["job_id"], pending=True)

    async def probe(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome | None:
        body = await self.client.json("GET", f"/jobs/{handle}", replay_safe=True, stats=stats)
        return ChunkOutcome(handle=handle) if body["status"] == "done" else None


ACME = Provider(
    name="acme",
    backend=AcmeBackend,
    env={"api_key": "ACME_API_KEY", "base_url": "ACME_BASE_URL"},
    emulator=AcmeEmulator,
    description="Acme lists (a test provider)",
)
