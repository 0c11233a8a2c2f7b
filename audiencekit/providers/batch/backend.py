"""``BatchBackend``: Batch audiences behind :class:`~audiencekit.AudienceBackend`.

Bulk writes go through the shared core in update calls of at most 10,000 ids; each call's
indexing token is polled with ``view`` until ``APPLIED``. The audience's id is its name.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping, Sequence

import httpx

from ...backend import Capabilities, Members
from ...errors import NotFoundError, Problem, ValidationError, WriteReplacedError
from ...models import (
    Add,
    Audience,
    BulkResult,
    Channel,
    Member,
    Operation,
    PendingChunk,
)
from ..base import (
    PROVIDER_DEFAULT,
    AsyncPager,
    BaseBackend,
    CallStats,
    ChunkOutcome,
    ChunkWriter,
    ClientOptions,
    Clock,
    Poller,
    PollPolicy,
    RetryPolicy,
    Sleep,
    prepared_members,
)
from .client import DEFAULT_RATE_LIMIT, DEFAULT_VERSION, BatchClient
from .wire import (
    MAX_ATTRIBUTES,
    MAX_IDS,
    PROVIDER,
    BatchAudience,
    IndexingState,
    check_audience_name,
    check_id,
    check_member,
    encode_replace_chunk,
    encode_update_chunk,
    update_body,
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
        base_url: str | None = None,
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
        options = ClientOptions.of(
            base_url=PROVIDER_DEFAULT if base_url is None else base_url,
            http_client=http_client,
            timeout=timeout,
            retry=retry,
            max_concurrency=max(8, 2 * concurrency),
            rate_limit=rate_limit,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
        self.client = client or BatchClient(
            api_key=api_key, project_key=project_key, api_version=api_version, options=options
        )
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        #: Waits for indexing tokens, learning from each how long the next may take.
        self.poller = Poller(poll, sleep=sleep, clock=clock)

    @property
    def poll(self) -> PollPolicy:
        """How the backend waits for indexing (see :class:`~audiencekit.options.PollPolicy`)."""
        return self.poller.policy

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

    async def new_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        """Create the audience and wait until Batch has indexed it.

        ``channel`` is ignored: Batch audiences hold custom user ids, whatever the channel.
        """
        token = await self.client.create(name)
        self.poller.issued(token)
        await self.poller.wait(
            _Indexed(self.client, name, token, CallStats()),
            handle=token,
            pending=lambda: [PendingChunk(handle=token, audience_id=name, ids=())],
        )
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

        await self.poller.wait(probe, handle=token or audience_id)

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

        operations = [Add(m) for m in collected.values()]
        return await self._execute(operations, _ReplaceWriter(self, audience_id), wait=wait)

    # -- bulk ---------------------------------------------------------------------------------

    def chunk_writer(self, audience_id: str) -> ChunkWriter[str]:
        _check_id(audience_id)
        return _UpdateWriter(self, audience_id)

    def refine(self, op: Operation) -> Operation:
        if isinstance(op, Add):
            problems = check_member(op.member)
            if problems:
                raise ValidationError(problems)
        return op

    def refine_id(self, id: str) -> str:
        problems = check_id(id)
        if problems:
            raise ValidationError(problems)
        return id


class _Indexed:
    """One view of a write's indexing token: its state once Batch shows it finished, None
    while it is in progress or its state is missing or unknown (polled on to the deadline)."""

    def __init__(self, client: BatchClient, name: str, token: str, stats: CallStats) -> None:
        self._client, self._name, self._token, self._stats = client, name, token, stats

    async def __call__(self) -> IndexingState | None:
        found = await self._client.view(self._name, indexing_token=self._token, stats=self._stats)
        state = found.indexing_state
        return state if state.finished else None


class _UpdateWriter(ChunkWriter[str]):
    """Update calls of at most 10,000 ids, each one's indexing token viewed until APPLIED."""

    takes_ids = True  # encode_update_chunk writes a bare id without a Member

    def __init__(self, backend: BatchBackend, audience_id: str) -> None:
        super().__init__(audience_id)
        self.client = backend.client
        self.chunk_size = backend.chunk_size
        self.concurrency = backend.concurrency
        self.poller = backend.poller
        self._post = self.client.update_raw

    def encode(self, ops: Mapping[str, Operation | str]) -> Mapping[str, str]:
        return encode_update_chunk(ops)

    async def send(self, entries: Mapping[str, str], stats: CallStats) -> ChunkOutcome:
        body = update_body(self.audience_id, entries.values())
        token = await self._post(self.audience_id, body, stats=stats)
        return ChunkOutcome(handle=token, pending=True)

    async def probe(self, handle: str, ids: Sequence[str], stats: CallStats) -> ChunkOutcome | None:
        state = await _Indexed(self.client, self.audience_id, handle, stats)()
        if state is None:
            return None
        if state is IndexingState.APPLIED:
            return ChunkOutcome(handle=handle)
        # Batch itself says the write ended without being applied.
        error = WriteReplacedError(
            f"batch reports write {handle} as REPLACED: a replace of {self.audience_id!r} "
            "overtook it",
            provider=PROVIDER,
            handle=handle,
        )
        return ChunkOutcome(handle=handle, failed=dict.fromkeys(ids, error))


class _ReplaceWriter(_UpdateWriter):
    """One replace call of at most 10,000 ids: never split, since a replace sent in parts would
    keep only the last part."""

    splittable = False
    takes_ids = False

    def __init__(self, backend: BatchBackend, audience_id: str) -> None:
        super().__init__(backend, audience_id)
        self.chunk_size = MAX_IDS
        self.concurrency = 1
        self._post = self.client.replace_raw

    def encode(self, ops: Mapping[str, Operation | str]) -> Mapping[str, str]:
        return encode_replace_chunk(ops)


def _check_id(audience_id: object) -> None:
    problems = check_audience_name(audience_id)
    if problems:
        raise ValidationError(problems)
