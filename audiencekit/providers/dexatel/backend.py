"""``DexatelBackend``: Dexatel audiences behind :class:`~audiencekit.AudienceBackend`.

Dexatel has no bulk call for an existing audience: each member is one contact, created, updated
or deleted by its own request (run concurrently by the shared core). Members are keyed by their
phone number, normalised to E.164 (see :func:`~.wire.normalize_number`); their attributes are the
contact fields first_name, last_name, custom1 (alias timestamp) and custom2 (alias date).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator, Mapping

import anyio
import httpx

from ...backend import Capabilities
from ...errors import ConflictError, NotFoundError, Problem, ValidationError
from ...models import Add, Audience, Channel, Member, Operation, Remove
from ..base import (
    PROVIDER_DEFAULT,
    AsyncPager,
    BaseBackend,
    CallStats,
    ChunkOutcome,
    ChunkWriter,
    ClientOptions,
    Clock,
    RetryPolicy,
    Sleep,
    create_once,
    fan_out,
)
from .client import DEFAULT_PAGE_SIZE, DexatelClient
from .wire import (
    CONTACT_FIELDS,
    PROVIDER,
    DexatelAudience,
    DexatelContact,
    check_contact_fields,
    normalize_number,
)

__all__ = ["DexatelBackend"]


class _Directory:
    """Finds a number's contacts in one audience, during one bulk call.

    Numbers are compared in E.164 (the client reads them so), whichever spelling Dexatel stored;
    a search asks for the digits alone, which match both. An account written by other tools may
    even hold one number twice, once in each spelling: a number maps to a list of contacts.

    Looking numbers up one at a time costs a search each; reading the whole audience costs one
    request a page. It starts with searches and switches to one full read once it has made as
    many lookups as that read costs, so it never pays more than twice the cheaper way. An empty
    audience needs neither.
    """

    def __init__(self, client: DexatelClient, audience_id: str) -> None:
        self._client = client
        self._audience_id = audience_id
        self._index: dict[str, list[DexatelContact]] | None = None
        self._pages: int | None = None
        self._lookups = 0
        self._lock = anyio.Lock()
        self._unsure: set[str] = set()
        self._reading = False

    async def plan(self, lookups: int) -> None:
        """Account for ``lookups`` to come; read the whole audience if that is now cheaper."""
        self._lookups += lookups
        if self._index is None:
            async with self._lock:
                await self._read_all_if_cheaper()

    async def _read_all_if_cheaper(self) -> None:
        if self._index is None:
            if self._pages is None:
                audience = await self._client.get_audience(self._audience_id)
                self._pages = math.ceil((audience.contacts_count or 0) / DEFAULT_PAGE_SIZE)
            if self._pages <= self._lookups:
                self._reading = True
                try:
                    index: dict[str, list[DexatelContact]] = {}
                    async for contact in self._client.list_contacts(self._audience_id):
                        index.setdefault(contact.number, []).append(contact)
                    self._index = index
                finally:
                    self._reading = False

    async def find(self, number: str, *, fresh: bool = False) -> list[DexatelContact]:
        """The contacts of ``number`` (E.164); ``fresh`` asks the provider even with an index."""
        if self._index is not None and not fresh and number not in self._unsure:
            return self._index.get(number, [])
        found = [
            contact
            async for contact in self._client.list_contacts(
                self._audience_id, search=number.lstrip("+")
            )
            if contact.number == number
        ]
        self.forget(number)
        for contact in found:
            self.remember(contact)
        return found

    # A number written while the index was being read may be missing from it or stale: it is
    # "unsure", and looked up afresh once.

    def remember(self, contact: DexatelContact) -> DexatelContact:
        if self._index is None:
            if self._reading:
                self._unsure.add(contact.number)
        else:
            known = self._index.setdefault(contact.number, [])
            known[:] = [c for c in known if c.id != contact.id] + [contact]
            self._unsure.discard(contact.number)
        return contact

    def forget(self, number: str) -> None:
        if self._index is None:
            if self._reading:
                self._unsure.add(number)
        else:
            self._index.pop(number, None)
            self._unsure.discard(number)


class DexatelBackend(BaseBackend):
    """Dexatel's audiences as an :class:`~audiencekit.AudienceBackend`.

    Pass a :class:`DexatelClient`, or the key and settings to build one (the key defaults to
    ``DEXATEL_API_KEY``). ``concurrency`` contact requests are in flight at once. Every request
    made with the key draws from one rate governor: Dexatel publishes no limit, so by default
    it has no ceiling and slows down only when Dexatel answers 429; ``rate_limit`` (requests
    per second) sets a ceiling, ``None`` switches the governor off. Campaigns and templates are
    on ``backend.client``.
    """

    provider = PROVIDER
    capabilities = Capabilities(
        list_members=True,
        rename=True,
        replace=False,
        campaigns=True,
        deferred_writes=False,
        max_batch=1,
        max_attributes=len(CONTACT_FIELDS),
    )

    def __init__(
        self,
        client: DexatelClient | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = math.inf,
        concurrency: int = 8,
        chunk_size: int = 100,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1 or chunk_size < 1:
            raise ValueError("concurrency and chunk_size must be at least 1")
        options = ClientOptions.of(
            base_url=PROVIDER_DEFAULT if base_url is None else base_url,
            http_client=http_client,
            timeout=timeout,
            retry=retry,
            max_concurrency=concurrency,
            rate_limit=rate_limit,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
        self.client = client or DexatelClient(api_key=api_key, options=options)
        self.concurrency = concurrency
        self.chunk_size = chunk_size

    # -- audiences --------------------------------------------------------------------------

    def _audience(self, found: DexatelAudience) -> Audience:
        extra = dict(found.extra)
        extra.update(account_id=found.account_id, links=dict(found.links))
        return Audience(
            id=found.id,
            name=found.name,
            provider=PROVIDER,
            channel=found.channel,
            size=found.contacts_count,
            created_at=found.create_date,
            updated_at=found.update_date,
            extra=extra,
        )

    async def new_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        """Create an audience; Dexatel needs its ``channel`` (SMS, VIBER or WHATSAPP)."""
        if channel is None:
            raise ValidationError([Problem("a Dexatel audience needs a channel", field="channel")])
        return self._audience(await self.client.create_audience(name, channel))

    async def get_audience(self, audience_id: str) -> Audience:
        return self._audience(await self.client.get_audience(audience_id))

    def list_audiences(self) -> AsyncPager[Audience]:
        return self.client.list_audiences().map(self._audience)

    async def rename_audience(self, audience_id: str, name: str) -> Audience:
        return self._audience(await self.client.update_audience(audience_id, name=name))

    async def delete_audience(self, audience_id: str) -> None:
        await self.client.delete_audience(audience_id)

    def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        return aiter(self.client.list_members(audience_id))

    # -- bulk ---------------------------------------------------------------------------------

    def chunk_writer(self, audience_id: str) -> ChunkWriter[Operation]:
        return _ContactWriter(self, audience_id)

    def refine(self, op: Operation) -> Operation:
        return _refine(op)


class _ContactWriter(ChunkWriter[Operation]):
    """One request (or a few) per contact: the operations themselves are what is sent, by
    their E.164 numbers, each chunk's contacts concurrently."""

    def __init__(self, backend: DexatelBackend, audience_id: str) -> None:
        super().__init__(audience_id)
        self.client = backend.client
        self.chunk_size = backend.chunk_size
        self.concurrency = 2  # chunks; each runs backend.concurrency contacts at once
        self.canonical = _refine
        self._contacts = backend.concurrency
        self._directory = _Directory(self.client, audience_id)
        self._attempts = self.client.transport.retry.max_retries + 1

    async def send(self, entries: Mapping[str, Operation], stats: CallStats) -> ChunkOutcome:
        await self._directory.plan(len(entries))

        async def apply_one(op: Operation) -> None:
            if isinstance(op, Add):
                await self._add(op.member, stats)
            else:
                await self._remove(op.id, stats)

        return await fan_out(entries, apply_one, limit=self._contacts)

    async def _first(self, number: str) -> DexatelContact | None:
        return next(iter(await self._directory.find(number, fresh=True)), None)

    async def _add(self, member: Member, stats: CallStats) -> None:
        client, audience_id, directory = self.client, self.audience_id, self._directory
        number, fields = member.id, {k: str(v) for k, v in member.attributes.items()}
        known = await directory.find(number)
        if known:
            existing = known[0]  # the first of a number stored twice: listings show both
        else:
            try:
                created = await create_once(
                    lambda: client.create_contact(audience_id, number, stats=stats, **fields),
                    lambda: self._first(number),
                    attempts=self._attempts,
                    pause=client.transport.pause,
                )
            except ConflictError:  # "Contact already exists": an upsert updates it instead
                found = await self._first(number)
                if found is None:
                    raise
                existing = found
            else:
                existing = directory.remember(created)
        differ = {k: v for k, v in fields.items() if existing.fields.get(k) != v}
        if differ:
            directory.remember(
                await client.update_contact(audience_id, existing.id, stats=stats, **differ)
            )

    async def _remove(self, number: str, stats: CallStats) -> None:
        for existing in await self._directory.find(number):  # none when already absent
            with contextlib.suppress(NotFoundError):  # deleted meanwhile: absent all the same
                await self.client.delete_contact(self.audience_id, existing.id, stats=stats)
        self._directory.forget(number)


def _refine(op: Operation) -> Operation:
    """Normalise the number and the field names; refuse what Dexatel would refuse."""
    number = normalize_number(op.id)
    if number is None:
        raise ValidationError(
            [Problem("not a phone number (E.164: + and 7 to 15 digits)", id=op.id)]
        )
    if isinstance(op, Remove):
        return op if number == op.id else Remove(number)
    fields, problems = check_contact_fields(op.member.attributes)
    if problems:
        raise ValidationError([Problem(p.message, id=op.id, field=p.field) for p in problems])
    return Add(Member(number, attributes=fields))
