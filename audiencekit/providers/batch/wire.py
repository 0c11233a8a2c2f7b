"""Batch's wire format: its models, typed attributes, and error bodies.

Facts from ``shared/provider-docs`` (003 update page, batch-reference.md, the OpenAPI excerpt).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
import httpx

from ...errors import (
    APIStatusError,
    ConflictError,
    ErrorDetail,
    NotFoundError,
    Problem,
    ValidationError,
)
from ...models import Add, AttributeValue, Member, OpenEnum, Operation, Remove, Url
from ..wire import dumps_text, fast_dumps, is_finite_number, is_text, make_converter, utc

__all__ = [
    "IndexingState",
    "MAX_ATTRIBUTES",
    "MAX_IDS",
    "BatchAudience",
    "check_audience_name",
    "check_id",
    "check_member",
    "encode_attributes",
    "encode_replace_chunk",
    "encode_update_chunk",
    "update_body",
    "error_detail",
    "parse_datetime",
]

PROVIDER = "batch"
#: Ids per update or replace call [confirmed].
MAX_IDS = 10_000
#: Attributes per id [confirmed on the 2.1-2.3 pages].
MAX_ATTRIBUTES = 15
#: Audience names: letters, digits, "_" and "-", up to 255, case-sensitive [confirmed].
AUDIENCE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class IndexingState(OpenEnum):
    """Where a Batch write stands; ``IN_PROCESS`` (the update page's spelling) reads IN_PROGRESS."""

    APPLIED = "APPLIED"
    IN_PROGRESS = "IN_PROGRESS"
    REPLACED = "REPLACED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def _aliases(cls) -> Mapping[str, str]:
        return {"IN_PROCESS": "IN_PROGRESS"}

    @property
    def finished(self) -> bool:
        """Whether the write has ended: no state, or one this version does not know, says
        nothing about it (Batch may have applied it), so it is not an end."""
        return self in (IndexingState.APPLIED, IndexingState.REPLACED)


#: Assumed from the SDK docs (not stated for the Audience API): attribute names are letters,
#: digits and "_", up to 30 characters. The emulator applies the same rule.
ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,30}$")
#: Assumed from the SDK docs (1024 characters on Android): the longest custom user id.
MAX_ID_LENGTH = 1024


def rfc3339(when: datetime) -> str:
    """``when`` as Batch's ``date()`` attributes take it: RFC 3339 in UTC, the year in four
    digits (``strftime`` writes year 999 as "999")."""
    when = utc(when)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z"


def parse_datetime(value: str) -> datetime:
    """RFC 3339, as Batch writes ``created``/``updated`` ("2023-08-12T22:30:05Z"), in UTC."""
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")))


@attrs.frozen(kw_only=True)
class BatchAudience:
    """An audience as Batch describes it (``oneAudience``)."""

    name: str
    display_name: str | None = None
    type: str | None = None
    nb_ids: int | None = None
    indexing_state: IndexingState = IndexingState.UNKNOWN
    created: datetime | None = None
    updated: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


converter = make_converter(parse_datetime)


def check_audience_name(name: object) -> list[Problem]:
    if not isinstance(name, str) or not AUDIENCE_NAME_RE.match(name):
        return [
            Problem(
                "a Batch audience name is 1 to 255 letters, digits, '_' or '-'",
                id=name if isinstance(name, str) else None,
                field="name",
            )
        ]
    return []


_PLAIN = frozenset({str, int, bool})
_SCALARS = frozenset({str, int, bool, float})
_GOOD_NAMES: set[str] = set()  # attribute names already checked (bounded below)


def plain_member(member: Member) -> bool:
    """Whether a member is of the common kind Batch takes as it is, found with cheap tests on
    the hot path of every add: a short id, few attributes, with names already found good,
    holding ints, bools and ASCII strings (sent as they are: a FrozenDict is JSON-ready)."""
    attributes = member.attributes
    if (
        len(member.id) > MAX_ID_LENGTH
        or len(attributes) > MAX_ATTRIBUTES
        or not _GOOD_NAMES.issuperset(attributes)
    ):
        return False
    for value in attributes.values():
        kind = type(value)
        if kind is str:
            if not value.isascii():  # type: ignore[union-attr]
                return False
        elif kind is not int and kind is not bool:
            return False
    return True


def check_id(ident: str) -> list[Problem]:
    """What Batch would refuse about an id (already checked as provider-neutral)."""
    if len(ident) > MAX_ID_LENGTH:
        return [Problem(f"longer than {MAX_ID_LENGTH} characters", id=ident[:40])]
    return []


def check_member(member: Member) -> list[Problem]:
    """Everything Batch would refuse about a member, found before sending."""
    if plain_member(member):
        return []
    attributes = member.attributes
    problems = check_id(member.id)
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(
            Problem(
                f"{len(attributes)} attributes; Batch takes at most {MAX_ATTRIBUTES}",
                id=member.id,
                field="attributes",
            )
        )
    for name, value in attributes.items():
        message = _attribute_problem(name, value)
        if message is not None:
            problems.append(Problem(message, id=member.id, field=name))
        elif len(_GOOD_NAMES) < 10_000:
            _GOOD_NAMES.add(name)
    return problems


def _attribute_problem(name: str, value: object) -> str | None:
    if not ATTRIBUTE_NAME_RE.match(name):
        return "attribute names are 1 to 30 letters, digits or '_'"
    if isinstance(value, Url) and not value.startswith(("http://", "https://")):
        return "a Url must start with http:// or https://"
    if isinstance(value, str):
        return None if is_text(value) else "not valid text (a lone surrogate?)"
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if is_finite_number(value) else "numbers must be finite"
    if isinstance(value, datetime):
        try:
            if value.utcoffset() is None:
                return "a datetime must be timezone-aware"
            utc(value)
        except (OverflowError, ValueError):  # an offset pushing it past year 1 or 9999
            return "a datetime that is out of range in UTC"
        return None
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if all(isinstance(item, str) and is_text(item) for item in value):
            return None
        return "a list attribute holds strings (valid text) only"
    return f"unsupported attribute type {type(value).__name__}"


def encode_attributes(attributes: Mapping[str, AttributeValue]) -> Mapping[str, Any]:
    """Python values as Batch's typed attributes: ``date(name)`` for datetimes, ``url(name)``
    for :class:`~audiencekit.models.Url`, lists of strings as arrays (values already checked)."""
    if _SCALARS.issuperset(map(type, attributes.values())):
        return attributes  # nothing to convert: a dict (FrozenDict) already
    wire: dict[str, Any] = {}
    for name, value in attributes.items():
        if type(value) in _SCALARS:
            wire[name] = value
        elif isinstance(value, Url):
            wire[f"url({name})"] = str(value)
        elif isinstance(value, datetime):
            wire[f"date({name})"] = rfc3339(value)
        elif isinstance(value, (str, bool, int, float)):
            wire[name] = value
        else:
            wire[name] = list(value)
    return wire


def encode_update_chunk(ops: Mapping[str, Operation | str]) -> dict[str, str]:
    """Operations (by id) as the elements of an update call's ``ids``, each as JSON text, by
    id; a ValidationError names every member Batch would refuse.

    The loop of every add: a bare ``str`` id (an add without attributes, from ``add_members``)
    needs no Member; the common member (see :func:`plain_member`) sends its attributes as they
    are; any other goes through :func:`check_member` and :func:`encode_attributes`. Each entry
    is text: a chunk holds no objects for the garbage collector to walk.
    """
    if _STR.issuperset(map(type, ops.values())):  # bare ids only: the fast path
        return _encode_ids(ops.keys())
    entries: dict[str, str] = {}
    problems: list[Problem] = []
    dumps, plain = fast_dumps, plain_member
    for key, op in ops.items():
        if type(op) is str:
            if len(key) > MAX_ID_LENGTH:
                problems += check_id(key)
            else:
                entries[key] = dumps({"action": "add", "id": key}).decode()
            continue
        if type(op) is Remove:
            entries[key] = dumps({"action": "remove", "id": key}).decode()
            continue
        member = op.member  # type: ignore[union-attr]
        attributes = member.attributes
        if plain(member):
            if attributes:
                wire = {"action": "add", "id": key, "attributes": attributes}
            else:
                wire = {"action": "add", "id": key}
            entries[key] = dumps(wire).decode()
            continue
        found = check_member(member)
        if found:
            problems += found
        else:
            wire = {"action": "add", "id": key, "attributes": encode_attributes(attributes)}
            entries[key] = dumps(wire).decode()
    if problems:
        raise ValidationError(problems)
    return entries


_STR = frozenset({str})
#: The characters JSON escapes in a string (besides the controls): a text free of them, and of
#: controls, is its own JSON string between quotes.
_ESCAPED = ('"', "\\")


def _encode_ids(ids: Collection[str]) -> dict[str, str]:
    """Bare ids (adds without attributes) as update entries. A batch of ids that need no JSON
    escaping (printable ASCII without quotes or backslashes: found with C-level tests on them
    all at once) is written with one format each, not a dict and an encoder call."""
    joined = "".join(ids)
    if (
        joined.isascii()
        and joined.isprintable()
        and _ESCAPED[0] not in joined
        and _ESCAPED[1] not in joined
        and max(map(len, ids), default=0) <= MAX_ID_LENGTH
    ):
        return {key: f'{{"action":"add","id":"{key}"}}' for key in ids}
    entries: dict[str, str] = {}
    problems: list[Problem] = []
    for key in ids:
        found = check_id(key)
        if found:
            problems += found
        else:
            entries[key] = fast_dumps({"action": "add", "id": key}).decode()
    if problems:
        raise ValidationError(problems)
    return entries


def encode_replace_chunk(ops: Mapping[str, Operation | str]) -> dict[str, str]:
    """Adds (by id) as the elements of a replace call's ``ids``, each as JSON text, by id."""
    entries: dict[str, str] = {}
    problems: list[Problem] = []
    for key, op in ops.items():
        assert isinstance(op, Add), "a replace is made of adds"
        found = check_member(op.member)
        if found:
            problems += found
            continue
        attributes = op.member.attributes
        entry: dict[str, Any] = {"id": key}
        if attributes:
            entry["attributes"] = encode_attributes(attributes)
        entries[key] = dumps_text(entry)
    if problems:
        raise ValidationError(problems)
    return entries


def update_body(name: str, entries: Iterable[str]) -> bytes:
    """The body of an update or replace call from its entries' JSON text."""
    return "".join(('{"name":', dumps_text(name), ',"ids":[', ",".join(entries), "]}")).encode()


#: Error codes whose meaning is clearer than their status (the codes are the emulator's and
#: third parties': Batch documents none for the 2.x audience API).
_CODE_CLASSES: Mapping[str, type[APIStatusError]] = {
    "AUDIENCE_NOT_FOUND": NotFoundError,
    "AUDIENCE_ALREADY_EXISTS": ConflictError,
    "AUDIENCE_EXISTS": ConflictError,
}


def error_detail(response: httpx.Response, body: Any) -> ErrorDetail:
    """Read Batch's ``{"error_code", "error_message"}``, or whatever else came."""
    if isinstance(body, Mapping) and ("error_message" in body or "error_code" in body):
        code = body.get("error_code")
        return ErrorDetail(
            str(body.get("error_message") or code or response.reason_phrase),
            code=None if code is None else str(code),
            kind=_CODE_CLASSES.get(str(code)),
        )
    return ErrorDetail(str(body)[:500] if body else response.reason_phrase)
