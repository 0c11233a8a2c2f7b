"""The provider-neutral vocabulary: audiences, members, membership operations, bulk results.

All models are frozen attrs classes. Enums read values they do not know as ``UNKNOWN`` instead of
failing, so a provider adding a channel or a state does not break parsing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, TypeAlias

import attrs

from .errors import AudienceKitError

__all__ = [
    "Add",
    "Attributes",
    "AttributeValue",
    "Audience",
    "BulkResult",
    "Channel",
    "Member",
    "OpenEnum",
    "Operation",
    "PendingChunk",
    "Remove",
    "Url",
]


class OpenEnum(str, enum.Enum):
    """A string enum that reads any value it does not know as ``UNKNOWN``."""

    @classmethod
    def _missing_(cls, value: object) -> OpenEnum:
        if isinstance(value, str):
            folded = cls._aliases().get(value.upper(), value.upper())
            for member in cls:
                if member.value == folded:
                    return member
        return cls["UNKNOWN"]

    @classmethod
    def _aliases(cls) -> Mapping[str, str]:
        return {}

    def __str__(self) -> str:
        return str(self.value)


class Channel(OpenEnum):
    """The messaging channel a Dexatel audience belongs to (case-insensitive when read)."""

    SMS = "SMS"
    VIBER = "VIBER"
    WHATSAPP = "WHATSAPP"
    UNKNOWN = "UNKNOWN"


class Url(str):
    """A string attribute value that the provider should store as a URL (Batch ``url(name)``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Url({str.__repr__(self)})"


#: The attribute values a member may carry. Providers refuse the ones they cannot store.
AttributeValue: TypeAlias = str | int | float | bool | datetime | Url | Sequence[str]
Attributes: TypeAlias = Mapping[str, AttributeValue]


class FrozenDict(dict[str, Any]):
    """A dict that refuses to change: one object (not a dict behind a proxy), and JSON-ready as
    it is, so the millions of members a bulk call streams cost as little as possible."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("this mapping cannot be changed; build a new one")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        # pickle and copy rebuild a dict subclass item by item, which this one refuses
        return (FrozenDict, (dict(self),))


_EMPTY: Mapping[str, Any] = FrozenDict()


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not value:
        return _EMPTY
    if type(value) is FrozenDict:
        return value
    return FrozenDict(value)


@attrs.frozen(kw_only=True)
class Audience:
    """A named set of members held by a provider.

    ``id`` is what the provider addresses it by (a Dexatel UUID, a Batch name); ``size`` is the
    member count when the provider reported one; ``extra`` keeps every field not modelled here.
    """

    id: str
    name: str
    provider: str
    channel: Channel | None = None
    size: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_mapping, eq=False, hash=False
    )


# Member, Add and Remove are made by the million, one per operation of a bulk call, so their
# __init__ is written by hand: it sets each slot through the slot's own descriptor (what
# attrs' generated __init__ does through object.__setattr__ and a converter call), which makes
# Add(Member(...)) about a third cheaper. It applies what the field declarations say (the
# default, _frozen_mapping's conversion), which attrs.evolve and cattrs still read; frozen, eq,
# hash and repr are attrs' as before. The _SET_* names are bound below the classes.


@attrs.frozen(init=False)
class Member:
    """One member of an audience: its id (a phone number, a custom user id) and its attributes."""

    id: str
    attributes: Attributes = attrs.field(
        factory=dict, converter=_frozen_mapping, kw_only=True, hash=False
    )

    def __init__(self, id: str, *, attributes: Mapping[str, AttributeValue] | None = None):
        _SET_MEMBER_ID(self, id)
        if not attributes:
            attributes = _EMPTY
        elif type(attributes) is not FrozenDict:
            attributes = FrozenDict(attributes)
        _SET_ATTRIBUTES(self, attributes)


@attrs.frozen(init=False)
class Add:
    """Make ``member`` part of the audience, with its attributes (an upsert)."""

    member: Member

    def __init__(self, member: Member):
        _SET_ADD_MEMBER(self, member)

    @property
    def id(self) -> str:
        return self.member.id


@attrs.frozen(init=False)
class Remove:
    """Make the member with this ``id`` absent from the audience (already absent is fine)."""

    id: str

    def __init__(self, id: str):
        _SET_REMOVE_ID(self, id)


_SET_MEMBER_ID = Member.__dict__["id"].__set__
_SET_ATTRIBUTES = Member.__dict__["attributes"].__set__
_SET_ADD_MEMBER = Add.__dict__["member"].__set__
_SET_REMOVE_ID = Remove.__dict__["id"].__set__


Operation: TypeAlias = Add | Remove


@attrs.frozen(kw_only=True)
class PendingChunk:
    """A chunk that was accepted but not yet waited for: its handle and the ids it carries."""

    handle: str
    audience_id: str
    ids: tuple[str, ...] = attrs.field(repr=lambda ids: f"<{len(ids)} ids>")


@attrs.frozen(kw_only=True)
class BulkResult:
    """What became of a bulk call.

    The bucket of an id is the outcome of its *last* operation: ``failed`` and ``unknown`` map the
    ids whose last operation failed, or may or may not have taken effect, to the error; an id is in
    at most one of them. ``applied`` counts the operations applied; an id that does not recur in a
    later chunk of the same call is counted once (the count is kept instead of the ids so that
    memory does not grow with the input). ``pending`` holds the chunks sent with ``wait=False``.
    """

    applied: int = 0
    failed: Mapping[str, AudienceKitError] = attrs.field(factory=dict, converter=_frozen_mapping)
    unknown: Mapping[str, AudienceKitError] = attrs.field(factory=dict, converter=_frozen_mapping)
    pending: tuple[PendingChunk, ...] = ()
    operations: int = 0
    handles: tuple[str, ...] = ()
    chunks: int = 0
    retries: int = 0
    polls: int = 0
    elapsed: float = 0.0
    #: For a mirror: the result of each backend, by name.
    parts: Mapping[str, BulkResult] = attrs.field(factory=dict, converter=_frozen_mapping)

    @property
    def ok(self) -> bool:
        """True when nothing failed, nothing is unknown and nothing is left pending."""
        return not (self.failed or self.unknown or self.pending)

    @property
    def pending_count(self) -> int:
        """How many ids are in chunks that were sent but not waited for."""
        return sum(len(chunk.ids) for chunk in self.pending)

    def raise_for_failures(self) -> BulkResult:
        """Raise :class:`~audiencekit.PartialFailureError` unless every id was applied."""
        from .errors import PartialFailureError

        if self.failed or self.unknown:
            raise PartialFailureError(self)
        return self
