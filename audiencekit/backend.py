"""The one interface every provider implements, and the record of what each can do."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar, runtime_checkable

import attrs

from .errors import PollTimeoutError, UnsupportedFeatureError

if TYPE_CHECKING:  # the bulk engine and httpx load on first use, not with the protocol
    from .pages import AsyncPager
    from .progress import ProgressCallback
from .models import Audience, BulkResult, Channel, Member, Operation, PendingChunk

__all__ = ["AudienceBackend", "Capabilities", "Members", "MembersOrIds", "Ids", "Operations"]

Members: TypeAlias = Iterable[Member] | AsyncIterable[Member]
#: What ``add_members`` takes: ``Member`` objects, or plain ``str`` ids (a member without
#: attributes: the fast path, which builds no Member), mixed as you like.
MembersOrIds: TypeAlias = Iterable[Member | str] | AsyncIterable[Member | str]
Ids: TypeAlias = Iterable[str] | AsyncIterable[str]
Operations: TypeAlias = Iterable[Operation] | AsyncIterable[Operation]

B = TypeVar("B", bound="AudienceBackend")


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do; calling anything it cannot raises
    :class:`~audiencekit.errors.UnsupportedFeatureError` before a request is sent."""

    #: ``iter_members`` works (Batch cannot list the ids of an audience).
    list_members: bool
    #: ``rename_audience`` works.
    rename: bool
    #: ``replace_members`` works (one call swaps the whole member set).
    replace: bool
    #: The provider has campaigns (reached through the provider's own client).
    campaigns: bool
    #: Writes are applied later and can be waited for (``wait=False`` makes sense).
    deferred_writes: bool
    #: The most ids one write request carries.
    max_batch: int
    #: The most attributes one member may carry, or None when the provider names no limit.
    max_attributes: int | None = None

    def require(self, provider: str, feature: str, hint: str = "") -> None:
        """Raise :class:`UnsupportedFeatureError` unless the flag named ``feature`` is set."""
        if not getattr(self, feature):
            raise UnsupportedFeatureError(provider, feature.replace("_", " "), hint)


@runtime_checkable
class AudienceBackend(Protocol):
    """One provider's audiences behind one typed, async vocabulary.

    Bulk calls take sync or async iterables of any size and stream them; they return a
    :class:`BulkResult` and, unless ``raise_on_failure=False``, raise
    :class:`~audiencekit.PartialFailureError` when any id was not applied.
    """

    @property
    def provider(self) -> str:
        """The provider's short name: ``"dexatel"``, ``"batch"``, ``"fake"``."""
        ...

    @property
    def account(self) -> str:
        """A stable, non-secret fingerprint of the account (or project) the backend writes to:
        a state store keys its rows by provider and account, so two accounts never mix."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create_audience(
        self, name: str, *, channel: Channel | str | None = None, exist_ok: bool = False
    ) -> Audience:
        """Create an empty audience (Dexatel needs a ``channel``). With ``exist_ok``, the
        audience of that name is returned when it exists already (as ``os.makedirs`` does)."""
        ...

    async def get_audience(self, audience_id: str) -> Audience: ...

    def list_audiences(self) -> AsyncPager[Audience]:
        """Every audience of the account or project, page by page."""
        ...

    async def rename_audience(self, audience_id: str, name: str) -> Audience: ...

    async def delete_audience(self, audience_id: str) -> None: ...

    async def add_members(
        self,
        audience_id: str,
        members: MembersOrIds,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Add (or update) members; existing members get the attributes given. An item may be a
        plain ``str`` id: a member without attributes (the fast path: no Member is built)."""
        ...

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
        ...

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
        ...

    async def replace_members(
        self, audience_id: str, members: Members, *, wait: bool = True
    ) -> BulkResult:
        """Make the audience hold exactly ``members``."""
        ...

    async def wait(
        self,
        pending: Sequence[PendingChunk] | BulkResult | PollTimeoutError,
        *,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Wait for chunks sent earlier with ``wait=False``, or left unconfirmed by a call that
        raised :class:`PollTimeoutError`: pass the chunks, a result, or the error itself."""
        ...

    def prepare(self, operation: Operation) -> Operation:
        """Check ``operation`` as a bulk call would before sending, and return it in this
        backend's canonical form (a normalised phone number, say); raises ValidationError."""
        ...

    def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        """Every member of the audience, streamed."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self: B) -> B: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
