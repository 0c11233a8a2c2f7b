"""An in-memory :class:`~audiencekit.AudienceBackend` for tests of code that uses audiencekit.

It models the parts that make real providers hard to test against: deferred writes (a token that
is applied only after some polls), failures per id or per call, and a record of every call.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone

import anyio
import attrs

from ..backend import Capabilities, Members
from ..core.account import account_fingerprint
from ..core.base import BaseBackend, prepared_members
from ..core.chunkwriter import ChunkOutcome, ChunkWriter
from ..core.poll import Poller, PollPolicy
from ..core.stats import CallStats
from ..errors import (
    AudienceKitError,
    ConflictError,
    NotFoundError,
    Problem,
    ValidationError,
)
from ..models import Add, Audience, BulkResult, Channel, Member, Operation
from ..pages import AsyncPager, Page

__all__ = ["FakeBackend", "RecordedCall"]


@attrs.frozen(kw_only=True)
class RecordedCall:
    """One call the fake received: the method, the audience, and the ids of a write."""

    method: str
    audience_id: str | None = None
    ids: tuple[str, ...] = ()


@attrs.define
class _Write:
    token: str
    audience_id: str
    ops: dict[str, Operation]
    polls_left: int
    applied: bool = False


@attrs.define
class _Audience:
    id: str
    name: str
    channel: Channel | None
    created: datetime
    members: dict[str, Member] = attrs.field(factory=dict)


class FakeBackend(BaseBackend):
    """In-memory audiences with deferred writes and injectable failures.

    ``polls_to_apply`` is how many status polls a write needs before it is applied (0: at once).
    :meth:`fail_id` makes every write of an id fail; :meth:`fail_next` makes the next calls of a
    method raise. ``calls`` records everything, in order.
    """

    provider = "fake"
    capabilities = Capabilities(
        list_members=True,
        rename=True,
        replace=True,
        campaigns=False,
        deferred_writes=True,
        max_batch=1_000,
    )

    def __init__(
        self,
        *,
        polls_to_apply: int = 0,
        chunk_size: int = 1_000,
        concurrency: int = 4,
        max_wait: float = 30.0,
        account: str = "default",
    ) -> None:
        self._account = account_fingerprint(account)
        self.polls_to_apply = polls_to_apply
        self.chunk_size = chunk_size
        self.concurrency = concurrency
        self.poller = Poller(PollPolicy(max_wait=max_wait, interval=0.001, max_interval=0.01))
        self.calls: list[RecordedCall] = []
        self.audiences: dict[str, _Audience] = {}
        self._writes: dict[str, _Write] = {}
        self._tokens = itertools.count(1)
        self._failing_ids: dict[str, AudienceKitError] = {}
        self._failing_calls: dict[str, list[AudienceKitError]] = {}
        self.closed = False

    @property
    def account(self) -> str:
        """The fingerprint of ``account=`` (two fakes of one account are one to a store)."""
        return self._account

    def __repr__(self) -> str:
        return f"<FakeBackend {len(self.audiences)} audiences>"

    # -- failure injection ----------------------------------------------------------------------

    def fail_id(self, member_id: str, error: AudienceKitError) -> None:
        """Every write that carries ``member_id`` reports it failed with ``error``."""
        self._failing_ids[member_id] = error

    def fail_next(self, method: str, error: AudienceKitError, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (``"write"`` for bulk chunks) raise ``error``."""
        self._failing_calls.setdefault(method, []).extend([error] * times)

    def members(self, audience_id: str) -> dict[str, Member]:
        """The applied members of an audience (a copy)."""
        return dict(self._get(audience_id).members)

    # -- AudienceBackend ------------------------------------------------------------------------

    def _record(self, method: str, audience_id: str | None = None, ids: Sequence[str] = ()) -> None:
        if self.closed:
            raise RuntimeError("the backend is closed")
        self.calls.append(RecordedCall(method=method, audience_id=audience_id, ids=tuple(ids)))
        queued = self._failing_calls.get(method)
        if queued:
            raise queued.pop(0)

    def _get(self, audience_id: str) -> _Audience:
        found = self.audiences.get(audience_id)
        if found is None:
            raise NotFoundError(f"audience {audience_id!r} not found", provider="fake", status=404)
        return found

    def _audience(self, audience: _Audience) -> Audience:
        return Audience(
            id=audience.id,
            name=audience.name,
            provider="fake",
            channel=audience.channel,
            size=len(audience.members),
            created_at=audience.created,
        )

    async def new_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError([Problem("an audience name must be a non-empty string")])
        self._record("create_audience")
        if any(a.name == name for a in self.audiences.values()):
            raise ConflictError(f"audience {name!r} exists", provider="fake", status=409)
        audience = _Audience(
            id=str(uuid.uuid4()),
            name=name,
            channel=None if channel is None else Channel(channel),
            created=datetime.now(timezone.utc),
        )
        self.audiences[audience.id] = audience
        await anyio.lowlevel.checkpoint()
        return self._audience(audience)

    async def get_audience(self, audience_id: str) -> Audience:
        self._record("get_audience", audience_id)
        await anyio.lowlevel.checkpoint()
        return self._audience(self._get(audience_id))

    def list_audiences(self) -> AsyncPager[Audience]:
        async def fetch(token: str | None) -> Page[Audience]:
            self._record("list_audiences")
            await anyio.lowlevel.checkpoint()
            items = list(self.audiences.values())
            start = int(token or 0)
            page = items[start : start + 100]
            more = start + 100 < len(items)
            return Page([self._audience(a) for a in page], str(start + 100) if more else None)

        return AsyncPager(fetch, provider="fake", what="audiences")

    async def rename_audience(self, audience_id: str, name: str) -> Audience:
        self._record("rename_audience", audience_id)
        audience = self._get(audience_id)
        audience.name = name
        await anyio.lowlevel.checkpoint()
        return self._audience(audience)

    async def delete_audience(self, audience_id: str) -> None:
        self._record("delete_audience", audience_id)
        self._get(audience_id)
        del self.audiences[audience_id]
        await anyio.lowlevel.checkpoint()

    async def replace_members(
        self, audience_id: str, members: Members, *, wait: bool = True
    ) -> BulkResult:
        collected = await prepared_members(self, members)
        self._record("replace_members", audience_id, list(collected))
        audience = self._get(audience_id)
        audience.members = collected
        await anyio.lowlevel.checkpoint()
        return BulkResult(applied=len(collected), operations=len(collected), chunks=1)

    async def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        self._record("iter_members", audience_id)
        for member in list(self._get(audience_id).members.values()):
            await anyio.lowlevel.checkpoint()
            yield member

    async def aclose(self) -> None:
        self.closed = True

    # -- bulk -----------------------------------------------------------------------------------

    def chunk_writer(self, audience_id: str) -> ChunkWriter[Operation]:
        return _FakeWriter(self, audience_id)

    def _apply(self, write: _Write) -> None:
        audience = self.audiences.get(write.audience_id)
        write.applied = True
        if audience is None:
            return
        for member_id, op in write.ops.items():
            if member_id in self._failing_ids:
                continue
            if isinstance(op, Add):
                audience.members[member_id] = op.member
            else:
                audience.members.pop(member_id, None)


class _FakeWriter(ChunkWriter[Operation]):
    """Each chunk is one write, answered with a token; a status poll counts towards applying it."""

    def __init__(self, fake: FakeBackend, audience_id: str) -> None:
        super().__init__(audience_id)
        self.fake = fake
        self.chunk_size = fake.chunk_size
        self.concurrency = fake.concurrency
        self.poller = fake.poller

    async def send(self, entries: Mapping[str, Operation], stats: CallStats) -> ChunkOutcome:
        fake = self.fake
        fake._record("write", self.audience_id, list(entries))
        stats.requests += 1
        fake._get(self.audience_id)
        await anyio.lowlevel.checkpoint()
        token = f"fake-{next(fake._tokens)}"
        write = _Write(token, self.audience_id, dict(entries), fake.polls_to_apply)
        fake._writes[token] = write
        if write.polls_left <= 0:
            fake._apply(write)
        return ChunkOutcome(handle=token, pending=True)

    async def probe(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome | None:
        fake = self.fake
        write = fake._writes[handle]
        if not write.applied:
            fake._record("poll", write.audience_id)
            write.polls_left -= 1
            if write.polls_left > 0:
                return None
            fake._apply(write)
        failed = {i: fake._failing_ids[i] for i in ids if i in fake._failing_ids}
        return ChunkOutcome(handle=handle, failed=failed)
