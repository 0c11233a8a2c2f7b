"""What every backend shares: the bulk calls, capability checks, the async context manager.

A provider subclasses :class:`BaseBackend` and supplies translation only: the single calls,
and a :class:`~audiencekit.core.chunkwriter.ChunkWriter` saying how one chunk is encoded, sent
(and checked on); the loops, the waits and the accounting live in the core.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio.lowlevel

from .. import telemetry
from ..backend import AudienceBackend, Capabilities, Ids, Members, MembersOrIds, Operations
from ..errors import (
    ConflictError,
    PollTimeoutError,
    Problem,
    UnsupportedFeatureError,
    ValidationError,
)
from ..models import Add, Audience, BulkResult, Channel, Member, Operation, PendingChunk, Remove
from ..pages import AsyncPager
from ..progress import ProgressCallback
from .bulk import run_bulk, settle_pending
from .checks import check_operation
from .chunkwriter import ChunkWriter
from .resolve import resolve_audience

if TYPE_CHECKING:
    from .transport import ProviderClient

__all__ = ["BaseBackend", "aiterate", "map_items", "prepared_members"]

T = TypeVar("T")
U = TypeVar("U")
Self = TypeVar("Self", bound="BaseBackend")


class BaseBackend:
    """The shared half of every :class:`~audiencekit.AudienceBackend`."""

    provider: ClassVar[str]
    capabilities: Capabilities  # a class attribute for providers; a mirror sets its own

    # -- what a provider supplies -------------------------------------------------------------

    @property
    def account(self) -> str:
        """The fingerprint of the account the backend writes to: by default, that of the
        credential its client's :class:`~audiencekit.providers.base.Transport` counts requests
        against (``rate_scope``). A backend without such a client says it itself."""
        client = self._provider_client()
        if client is not None:
            return client.transport.account
        raise NotImplementedError(
            f"{type(self).__name__} must define `account` (a non-secret fingerprint of the "
            "account it writes to) to be used with a state store"
        )

    def chunk_writer(self, audience_id: str) -> ChunkWriter[Any]:
        """The writer of one bulk call on ``audience_id``: how its chunks are encoded, sent
        and waited for. Raise ValidationError for an id the provider cannot address."""
        raise NotImplementedError

    def refine(self, operation: Operation) -> Operation:
        """Check one operation (already checked as provider-neutral) the way the provider
        would, and return it in the provider's canonical form; raise ValidationError. Used by
        :meth:`prepare`, and to check a list whole before a bulk call sends any of it; it must
        accept what the writer's ``encode`` accepts, and refuse what it refuses."""
        return operation

    def refine_id(self, id: str) -> Operation | str:
        """Check a bare id given to ``add_members`` (already checked as provider-neutral) the
        way the provider would: the id, or the operation it stands for in canonical form;
        raise ValidationError. By default, :meth:`refine` of an Add of a Member without
        attributes; a provider whose writer ``takes_ids`` checks the id alone and returns it."""
        return self.refine(Add(Member(id)))

    def __repr__(self) -> str:
        client = self._provider_client()
        if client is None:
            return object.__repr__(self)
        return f"<{type(self).__name__} {client.transport.base_url}>"  # never a key

    async def aclose(self) -> None:
        """Release connections; the backend cannot be used afterwards. By default: close the
        backend's ``client`` when it is a :class:`~audiencekit.providers.base.ProviderClient`."""
        client = self._provider_client()
        if client is not None:
            await client.aclose()

    def _provider_client(self) -> ProviderClient | None:
        from .transport import ProviderClient

        client = getattr(self, "client", None)
        return client if isinstance(client, ProviderClient) else None

    # -- audiences: providers override what they support --------------------------------------

    async def new_audience(self, name: str, *, channel: Channel | str | None = None) -> Audience:
        """Create an empty audience named ``name``: one call to the provider (raise
        ConflictError when the provider says the name is taken)."""
        raise NotImplementedError

    # -- audiences: the same for every provider -----------------------------------------------

    async def create_audience(
        self, name: str, *, channel: Channel | str | None = None, exist_ok: bool = False
    ) -> Audience:
        """Create an empty audience (Dexatel needs a ``channel``). With ``exist_ok``, the
        audience of that name is returned when it exists already, as ``os.makedirs`` does
        (ConflictError when its channel is not ``channel``), found by the rule every workflow
        uses to find an audience by name."""
        if not exist_ok:
            return await self.new_audience(name, channel=channel)
        found, _ = await resolve_audience(self, name, create=True, channel=channel)
        wanted = None if channel is None else Channel(channel)
        if wanted is not None and found.channel not in (None, Channel.UNKNOWN, wanted):
            raise ConflictError(
                f"{self.provider} audience {name!r} exists with channel {found.channel.value}, "
                f"not {wanted.value}",
                provider=self.provider,
                status=409,
            )
        return found

    async def get_audience(self, audience_id: str) -> Audience:
        raise NotImplementedError

    def list_audiences(self) -> AsyncPager[Audience]:
        raise NotImplementedError

    async def delete_audience(self, audience_id: str) -> None:
        raise NotImplementedError

    async def rename_audience(self, audience_id: str, name: str) -> Audience:
        self.capabilities.require(self.provider, "rename")
        raise NotImplementedError

    async def replace_members(
        self, audience_id: str, members: Members, *, wait: bool = True
    ) -> BulkResult:
        self.capabilities.require(self.provider, "replace")
        raise NotImplementedError

    def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        self.capabilities.require(self.provider, "list_members")
        raise NotImplementedError

    # -- bulk calls, the same for every provider ----------------------------------------------

    def prepare(self, operation: Operation) -> Operation:
        """Check ``operation`` as a bulk call would before sending, and return it in this
        backend's canonical form (a normalised phone number, say); raises ValidationError."""
        return self.refine(check_operation(operation))

    @telemetry.traced("audiencekit.apply")
    async def apply(
        self,
        audience_id: str,
        operations: Operations,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Apply ``Add``/``Remove`` operations in order; the last one per id wins."""
        self._check_wait(wait)
        return await self._execute(
            operations,
            self.chunk_writer(audience_id),
            wait=wait,
            on_progress=on_progress,
            raise_on_failure=raise_on_failure,
        )

    async def _execute(
        self,
        operations: Operations,
        writer: ChunkWriter[Any],
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Run ``operations`` through the shared bulk engine with ``writer``."""
        return await run_bulk(
            operations,
            writer=writer,
            wait=wait,
            prepare=self.refine,
            on_progress=on_progress,
            raise_on_failure=raise_on_failure,
        )

    @telemetry.traced("audiencekit.add_members")
    async def add_members(
        self,
        audience_id: str,
        members: MembersOrIds,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Add (or update) members; existing members get the attributes given. An item may be
        a plain ``str`` id: a member without attributes, sent without building a Member."""
        if type(self).apply is not BaseBackend.apply:  # its own apply (a mirror): Adds for it
            return await self.apply(
                audience_id,
                map_items(members, _add_of),
                wait=wait,
                on_progress=on_progress,
                raise_on_failure=raise_on_failure,
            )
        self._check_wait(wait)
        if not isinstance(members, AsyncIterable):
            _check_iterable(members)
        return await run_bulk(
            members,  # the engine reads each Member as an Add of it, each str as a bare id
            writer=self.chunk_writer(audience_id),
            wait=wait,
            prepare=self.refine,
            on_progress=on_progress,
            raise_on_failure=raise_on_failure,
            bare_ids=True,
            prepare_id=self.refine_id,
        )

    @telemetry.traced("audiencekit.remove_members")
    async def remove_members(
        self,
        audience_id: str,
        ids: Ids,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Remove members by id; an id already absent counts as applied."""
        return await self.apply(
            audience_id,
            map_items(ids, Remove),
            wait=wait,
            on_progress=on_progress,
            raise_on_failure=raise_on_failure,
        )

    @telemetry.traced("audiencekit.wait")
    async def wait(
        self,
        pending: Sequence[PendingChunk] | BulkResult | PollTimeoutError,
        *,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Wait for chunks sent earlier with ``wait=False``, or left unconfirmed by a call that
        raised :class:`PollTimeoutError`: pass the chunks, a result, or the error itself."""
        if isinstance(pending, (BulkResult, PollTimeoutError)):
            chunks = pending.pending
        else:
            chunks = tuple(pending)
        if chunks:
            self.capabilities.require(self.provider, "deferred_writes")

        writers: dict[str, ChunkWriter[Any]] = {}

        def writer_for(audience_id: str) -> ChunkWriter[Any]:
            if audience_id not in writers:
                writers[audience_id] = self.chunk_writer(audience_id)
            return writers[audience_id]

        concurrency = writer_for(chunks[0].audience_id).concurrency if chunks else 1
        return await settle_pending(
            chunks,
            writer_for=writer_for,
            concurrency=concurrency,
            on_progress=on_progress,
            raise_on_failure=raise_on_failure,
        )

    def _check_wait(self, wait: bool) -> None:
        if not wait and not self.capabilities.deferred_writes:
            raise UnsupportedFeatureError(
                self.provider, "wait=False", "its writes are applied before the call returns"
            )

    async def __aenter__(self: Self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _add_of(item: Member | str) -> Add:
    return Add(Member(item)) if type(item) is str else Add(item)  # type: ignore[arg-type]


def map_items(
    items: Iterable[T] | AsyncIterable[T], wrap: Callable[[T], U]
) -> Iterable[U] | AsyncIterable[U]:
    """Wrap each item, keeping a sized input sized (so it is validated whole before sending)."""
    if isinstance(items, AsyncIterable):
        return _amap(items, wrap)
    _check_iterable(items)
    if isinstance(items, Collection):
        return [wrap(item) for item in items]
    return (wrap(item) for item in items)


async def _amap(items: AsyncIterable[T], wrap: Callable[[T], U]) -> AsyncIterator[U]:
    async for item in items:
        yield wrap(item)


def _check_iterable(items: object) -> None:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValidationError(
            [Problem(f"expected an iterable (list, generator, ...), got {type(items).__name__}")]
        )


async def prepared_members(backend: AudienceBackend, members: Members) -> dict[str, Member]:
    """All of ``members`` in the backend's canonical form, by id (the last one of an id wins);
    a ValidationError names every bad one, before anything is sent."""
    wanted: dict[str, Member] = {}
    problems: list[Problem] = []
    async for member in aiterate(members):
        try:
            op = backend.prepare(Add(member))
        except ValidationError as exc:
            problems.extend(exc.problems)
            continue
        assert isinstance(op, Add)
        wanted.pop(op.id, None)
        wanted[op.id] = op.member
    if problems:
        raise ValidationError(problems)
    return wanted


async def aiterate(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate a sync or async iterable asynchronously (a str is refused, not split); a sync one
    lets the event loop run every 1,024 items, so that a long list does not hold it."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
        return
    _check_iterable(items)
    for count, item in enumerate(items, 1):
        yield item
        if count % 1024 == 0:
            await anyio.lowlevel.checkpoint()
