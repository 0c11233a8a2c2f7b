"""Test doubles for the shared core: a fake clock, and a tiny write-then-wait provider on respx.

``TokenServer`` behaves like the part of Batch the core cares about: ``POST /update`` accepts a
chunk and answers 202 with a token, the write is applied only after some ``GET /view`` polls, and
writes may be applied in any order. ``TokenBackend`` is a provider for it, built on BaseBackend the
way real adapters are, so the tests drive the public bulk API over (mocked) HTTP.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import httpx

from audiencekit import Add, NotFoundError, Operation, Remove, ValidationError
from audiencekit.backend import Capabilities
from audiencekit.core.account import account_fingerprint
from audiencekit.errors import Problem
from audiencekit.options import RetryPolicy
from audiencekit.providers.base import (
    BaseBackend,
    CallStats,
    ChunkOutcome,
    ChunkWriter,
    ErrorDetail,
    Poller,
    PollPolicy,
    Transport,
)
from audiencekit.providers.batch import IndexingState
from audiencekit.testing import EmulatorServer, InstantClock

BASE = "https://token.test/v1"
KEY = "sk_test_4f1d9c2b7a0e48e5b61c"


FakeClock = InstantClock


@attrs.define
class _Write:
    token: str
    ops: list[dict[str, Any]]
    polls_left: int
    applied: bool = False


class TokenServer:
    """Server side of the fake provider, used as a respx side effect."""

    def __init__(self, *, polls_to_apply: int = 0, reorder: bool = False, seed: int = 0) -> None:
        self.members: dict[str, dict[str, Any]] = {}
        self.updates: list[list[dict[str, Any]]] = []
        self.views = 0
        self.polls_to_apply = polls_to_apply
        self.reorder = reorder
        self.fail: Callable[[list[dict[str, Any]]], httpx.Response | None] | None = None
        self._writes: dict[str, _Write] = {}
        self._queue: list[_Write] = []
        self._rng = random.Random(seed)
        self._tokens = itertools.count(1)

    def update(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        ops = body["ids"]
        if self.fail is not None and (response := self.fail(ops)) is not None:
            return response
        self.updates.append(ops)
        write = _Write(f"tok{next(self._tokens)}", ops, self.polls_to_apply)
        self._writes[write.token] = write
        self._queue.append(write)
        if self.polls_to_apply == 0:
            self._apply_ready()
        return httpx.Response(202, json={"indexing_token": write.token})

    def view(self, request: httpx.Request) -> httpx.Response:
        self.views += 1
        token = request.url.params["indexing_token"]
        write = self._writes.get(token)
        if write is None:
            return httpx.Response(404, json={"error_code": "NOT_FOUND", "error_message": token})
        write.polls_left -= 1
        self._apply_ready()
        state = IndexingState.APPLIED if write.applied else IndexingState.IN_PROGRESS
        return httpx.Response(200, json={"indexing_state": state.value})

    def _apply_ready(self) -> None:
        ready = [w for w in self._queue if w.polls_left <= 0]
        if self.reorder:
            self._rng.shuffle(ready)
        for write in ready:
            for op in write.ops:
                if op["action"] == "add":
                    self.members[op["id"]] = op.get("attributes", {})
                else:
                    self.members.pop(op["id"], None)
            write.applied = True
            self._queue.remove(write)

    def mount(self, router: Any) -> None:
        self.router = router
        router.post(f"{BASE}/update").mock(side_effect=self.update)
        router.get(f"{BASE}/view").mock(side_effect=self.view)


def _parse_error(response: httpx.Response, body: Any) -> ErrorDetail:
    if isinstance(body, dict) and "error_message" in body:
        return ErrorDetail(str(body["error_message"]), code=body.get("error_code"))
    return ErrorDetail(str(body))


class TokenBackend(BaseBackend):
    """A write-then-wait provider over ``TokenServer``: only the bulk parts are implemented."""

    provider = "token"
    capabilities = Capabilities(
        list_members=False,
        rename=False,
        replace=False,
        campaigns=False,
        deferred_writes=True,
        max_batch=10_000,
        max_attributes=3,
    )

    def __init__(
        self,
        *,
        clock: FakeClock,
        chunk_size: int = 10_000,
        concurrency: int = 4,
        max_wait: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.clock = clock
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.poller = Poller(
            PollPolicy(max_wait=max_wait, interval=0.5, max_interval=2.0),
            sleep=clock.sleep,
            clock=clock,
        )
        self.transport = Transport(
            provider="token",
            base_url=BASE,
            auth_headers={"Authorization": f"Bearer {KEY}"},
            parse_error=_parse_error,
            retry=retry or RetryPolicy(max_retries=3),
            sleep=clock.sleep,
            clock=clock,
            max_concurrency=concurrency,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    def chunk_writer(self, audience_id: str) -> ChunkWriter[dict[str, Any]]:
        return _TokenWriter(self, audience_id)

    def refine(self, op: Operation) -> Operation:
        if isinstance(op, Add) and len(op.member.attributes) > 3:
            raise ValidationError([Problem("more than 3 attributes", id=op.id, field="attributes")])
        return op


class _TokenWriter(ChunkWriter[dict[str, Any]]):
    def __init__(self, backend: TokenBackend, audience_id: str) -> None:
        super().__init__(audience_id)
        self.transport = backend.transport
        self.chunk_size = backend.chunk_size
        self.concurrency = backend.concurrency
        self.poller = backend.poller
        self._refine = backend.refine

    def encode(self, ops: Mapping[str, Operation]) -> Mapping[str, dict[str, Any]]:
        problems: list[Problem] = []
        entries: dict[str, dict[str, Any]] = {}
        for key, op in ops.items():
            try:
                entries[key] = _wire(self._refine(op))
            except ValidationError as exc:
                problems += exc.problems
        if problems:
            raise ValidationError(problems)
        return entries

    async def send(self, entries: Mapping[str, dict[str, Any]], stats: CallStats) -> ChunkOutcome:
        body = {"name": self.audience_id, "ids": list(entries.values())}
        response = await self.transport.request(
            "POST", "/update", json=body, replay_safe=True, stats=stats
        )
        return ChunkOutcome(handle=response.json()["indexing_token"], pending=True)

    async def probe(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome | None:
        response = await self.transport.request(
            "GET", "/view", params={"indexing_token": handle}, replay_safe=True, stats=stats
        )
        state = IndexingState(response.json()["indexing_state"])
        if state is IndexingState.IN_PROGRESS:
            return None
        failed: dict[str, Any] = {}
        if state is not IndexingState.APPLIED:
            error = NotFoundError(f"write {handle} ended {state}", provider="token", status=404)
            failed = dict.fromkeys(ids, error)
        return ChunkOutcome(handle=handle, failed=failed)


def _wire(op: Operation) -> dict[str, Any]:
    if isinstance(op, Remove):
        return {"action": "remove", "id": op.id}
    entry: dict[str, Any] = {"action": "add", "id": op.id}
    if op.member.attributes:
        entry["attributes"] = dict(op.member.attributes)
    return entry


def batch_scope(server: EmulatorServer) -> str:
    """The scope the emulator's Batch project keeps its rows under in a state store."""
    return f"batch/{account_fingerprint(server.endpoints.batch_project)}"
