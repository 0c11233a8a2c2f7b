"""``BatchBackend``: Batch audiences behind :class:`~audiencekit.AudienceBackend`.

Bulk writes go through the shared core in update calls of at most 10,000 ids; each call's
indexing token is polled with ``view`` until ``APPLIED``. The audience's id is its name.
"""

from __future__ import annotations

import collections
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import httpx

from ..._base import BaseBackend, prepared_members
from ..._bulk import BulkPlan, ChunkOutcome, Settler
from ..._http import CallStats, Clock, RetryPolicy, Sleep
from ..._pages import AsyncPager
from ..._poll import DelayLearner, PollPolicy, wait_until
from ..._wire import dumps_text
from ...backend import Capabilities, Members
from ...errors import APIError, NotFoundError, Problem, ValidationError, WriteReplacedError
from ...models import (
    Add,
    Audience,
    BulkResult,
    Channel,
    IndexingState,
    Member,
    Operation,
    PendingChunk,
)
from .client import DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT, DEFAULT_VERSION, BatchClient
from .wire import (
    MAX_ATTRIBUTES,
    MAX_IDS,
    PROVIDER,
    BatchAudience,
    check_audience_name,
    check_member,
    encode_replace_entry,
    encode_update_entry,
)

__all__ = ["DEFAULT_POLL", "BatchBackend"]

#: Batch gives no indexing time; a third party reports 30 s to 5 min as typical. Poll after
#: 0.25 s, backing off to every 5 s, for at most 10 minutes.
DEFAULT_POLL = PollPolicy(max_wait=600.0, interval=0.25, backoff=1.5, max_interval=5.0)


class BatchBackend(BaseBackend):
    """Batch's audiences as an :class:`~audiencekit.AudienceBackend`.

    Pass a :class:`BatchClient`, or the keys and settings to build one (keys default to the
    ``BATCH_API_KEY`` and ``BATCH_PROJECT_KEY`` environment variables). ``concurrency`` update
    calls are in flight at once; ``poll`` says how to wait for indexing: the first check of a
    write's token comes after the indexing time learned from the writes before it.
    ``rate_limit`` is the ceiling of the project's shared rate governor (see
    :class:`BatchClient`).
    """

    provider = PROVIDER
    capabilities = Capabilities(
        list_members=False,
        rename=False,
        replace=True,
        campaigns=False,
        deferred_writes=True,
        max_batch=MAX_IDS,
        max_attributes=MAX_ATTRIBUTES,
    )

    def __init__(
        self,
        client: BatchClient | None = None,
        *,
        api_key: str | None = None,
        project_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_VERSION,
        http_client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        poll: PollPolicy = DEFAULT_POLL,
        concurrency: int = 4,
        chunk_size: int = MAX_IDS,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= chunk_size <= MAX_IDS:
            raise ValueError(f"chunk_size must be between 1 and {MAX_IDS}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client or BatchClient(
            api_key=api_key,
            project_key=project_key,
            base_url=base_url,
            api_version=api_version,
            client=http_client,
            timeout=timeout,
            retry=retry,
            max_concurrency=max(8, 2 * concurrency),
            rate_limit=rate_limit,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
        self.poll = poll
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self._sleep: Sleep = sleep or anyio.sleep
        self._clock: Clock = clock or anyio.current_time
        self._indexing = DelayLearner()
        #: When each recent token was issued, so that its wait starts from then (bounded).
        self._issued: collections.OrderedDict[str, float] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"<BatchBackend {self.client.transport.base_url}>"

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- audiences --------------------------------------------------------------------------

    def _audience(self, found: BatchAudience) -> Audience:
        extra = dict(found.extra)
        extra.update(
            display_name=found.display_name,
            type=found.type,
            indexing_state=found.indexing_state.value,
        )
        return Audience(
            id=found.name,
            name=found.name,
            provider=PROVIDER,
            size=found.nb_ids,
            created_at=found.created,
            updated_at=found.updated,
            extra=extra,
        )

    async def create_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        """Create the audience and wait until Batch has indexed it.

        ``channel`` is ignored: Batch audiences hold custom user ids, whatever the channel.
        """
        token = await self.client.create(name)
        self._issue(token)
        await self._wait_token(name, token, (), CallStats())
        return await self.get_audience(name)

    async def get_audience(self, audience_id: str) -> Audience:
        _check_id(audience_id)
        return self._audience(await self.client.view(audience_id))

    def list_audiences(self) -> AsyncPager[Audience]:
        return self.client.list(limit=100).map(self._audience)

    async def delete_audience(self, audience_id: str) -> None:
        """Delete the audience and wait until Batch no longer shows it (``get_audience`` then
        raises :class:`~audiencekit.NotFoundError`)."""
        _check_id(audience_id)
        client = self.client
        token = await client.remove(audience_id)

        async def probe() -> bool | None:
            try:
                await client.view(audience_id, indexing_token=token)
            except NotFoundError:
                return True
            return None  # Batch still shows it: the removal is being applied

        await wait_until(
            probe,
            policy=self.poll,
            pending=lambda: [token or audience_id],
            sleep=self._sleep,
            clock=self._clock,
        )

    def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        self.capabilities.require(
            PROVIDER,
            "list_members",
            "Batch has no call that returns an audience's ids. Keep what you push in the state "
            "store (audiencekit.sync with a SqliteStateStore) and read it from there.",
        )
        raise AssertionError("unreachable")  # pragma: no cover

    async def replace_members(
        self, audience_id: str, members: Members, *, wait: bool = True
    ) -> BulkResult:
        """Make the audience hold exactly ``members``, in one replace call.

        Batch replaces an audience in one call of at most 10,000 ids (a second replace would wipe
        the first), so more than 10,000 distinct members are refused before anything is sent;
        to reach a larger set, use ``audiencekit.sync`` (it sends only the difference).
        """
        _check_id(audience_id)
        self._check_wait(wait)
        collected = await prepared_members(self, members)
        if len(collected) > MAX_IDS:
            raise ValidationError(
                [
                    Problem(
                        f"{len(collected):,} members: Batch replaces an audience with at most "
                        f"{MAX_IDS:,} ids in one call; use audiencekit.sync for more"
                    )
                ]
            )

        async def send(entries: Mapping[str, dict[str, Any]], stats: CallStats) -> ChunkOutcome:
            token = await self.client.replace(audience_id, list(entries.values()), stats=stats)
            self._issue(token)
            return ChunkOutcome(handle=token, pending=True)

        plan = BulkPlan(
            entry=encode_replace_entry,
            send=send,
            settle=self._settler(audience_id),
            chunk_size=MAX_IDS,
            concurrency=1,
            splittable=False,  # a replace sent in parts would keep only the last part
        )
        operations = [Add(m) for m in collected.values()]
        return await self._execute(audience_id, operations, plan, wait=wait)

    # -- bulk ---------------------------------------------------------------------------------

    def _plan(self, audience_id: str) -> BulkPlan[str]:
        _check_id(audience_id)
        client = self.client
        head = '{"name":' + dumps_text(audience_id) + ',"ids":['

        async def send(entries: Mapping[str, str], stats: CallStats) -> ChunkOutcome:
            body = "".join((head, ",".join(entries.values()), "]}")).encode()
            # The transport shields the exchange itself from a cancellation: a write either
            # was not sent, or its token is known (and reported at once, for checkpoints).
            token = await client.update_raw(audience_id, body, stats=stats)
            self._issue(token)
            return ChunkOutcome(handle=token, pending=True)

        # Each operation is kept as its JSON: a chunk holds text, not a member and its parts.
        return BulkPlan(
            entry=encode_update_entry,
            send=send,
            settle=self._settler(audience_id),
            chunk_size=self.chunk_size,
            concurrency=self.concurrency,
        )

    def _refine(self, op: Operation) -> Operation:
        if isinstance(op, Add):
            problems = check_member(op.member)
            if problems:
                raise ValidationError(problems)
        return op

    def _settler(self, audience_id: str) -> Settler:
        async def settle(token: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome:
            state = await self._wait_token(audience_id, token, ids, stats)
            if state is IndexingState.APPLIED:
                return ChunkOutcome(handle=token)
            # Batch itself says the write ended without being applied.
            if state is IndexingState.REPLACED:
                error: APIError = WriteReplacedError(
                    f"batch reports write {token} as REPLACED: a replace of {audience_id!r} "
                    "overtook it",
                    provider=PROVIDER,
                    handle=token,
                )
            else:
                error = APIError(
                    f"batch reports write {token} in state {state}, not APPLIED",
                    provider=PROVIDER,
                )
            return ChunkOutcome(handle=token, failed=dict.fromkeys(ids, error))

        return settle

    def _issue(self, token: str) -> None:
        """Note when ``token`` was issued (its indexing time is measured from then)."""
        issued = self._issued
        issued[token] = self._clock()
        if len(issued) > 4096:
            issued.popitem(last=False)

    async def _wait_token(
        self, name: str, token: str, ids: Sequence[str], stats: CallStats
    ) -> IndexingState:
        """Poll ``token`` until Batch reports a state other than in progress. The first view
        waits for the indexing time learned from earlier tokens (when this one's issue time is
        known); a timeout carries the write as a :class:`PendingChunk`, to resume with wait()."""
        client = self.client
        since = self._issued.pop(token, None)

        async def probe() -> IndexingState | None:
            found = await client.view(name, indexing_token=token, stats=stats)
            state = found.indexing_state
            return None if state is IndexingState.IN_PROGRESS else state

        polled = await wait_until(
            probe,
            policy=self.poll,
            pending=lambda: [PendingChunk(handle=token, audience_id=name, ids=tuple(ids))],
            sleep=self._sleep,
            clock=self._clock,
            stats=stats,
            first_delay=self._indexing.guess if since is not None else 0.0,
            since=since,
        )
        if since is not None:
            self._indexing.learn(polled)
        return polled.value


def _check_id(audience_id: object) -> None:
    problems = check_audience_name(audience_id)
    if problems:
        raise ValidationError(problems)
