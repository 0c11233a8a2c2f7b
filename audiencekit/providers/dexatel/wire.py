"""Dexatel's wire format: models, dates, phone numbers, contact fields, error codes, page links.

Facts from ``shared/provider-docs`` (pages 000, 001, 002, 004 and dexatel-reference.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx

from ...errors import APIStatusError, ConflictError, ErrorDetail, NotFoundError, Problem
from ...models import Channel, Member, OpenEnum
from ..wire import is_text, make_converter, unexpected, utc

__all__ = [
    "CONTACT_FIELDS",
    "CampaignStatus",
    "DexatelAudience",
    "DexatelCampaign",
    "DexatelContact",
    "DexatelTemplate",
    "Messages",
    "check_contact_fields",
    "error_detail",
    "format_datetime",
    "member_from_wire",
    "next_page_token",
    "normalize_number",
    "parse_datetime",
    "read_number",
]

PROVIDER = "dexatel"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Audience names: letters, digits, "-" and "_", at most 45 [confirmed, R 1304/1305].
AUDIENCE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,45}$")
#: A contact's fields and their limits [confirmed, R 1361-1364]. The two custom fields are called
#: timestamp/date on the original pages and custom1/custom2 on the newer ones: both are read,
#: and the original pages' names are sent.
CONTACT_FIELDS: Mapping[str, int] = {
    "first_name": 32,
    "last_name": 32,
    "custom1": 32,
    "custom2": 70,
}
FIELD_ALIASES: Mapping[str, str] = {"timestamp": "custom1", "date": "custom2"}
WIRE_NAMES: Mapping[str, str] = {"custom1": "timestamp", "custom2": "date"}
#: Contacts an audience may be created with in one call [confirmed R 1308].
MAX_INITIAL_CONTACTS = 1_000
MAX_TEMPLATE_TEXT = 1_000
MAX_TEMPLATE_NAME = 45
_SEPARATORS = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def parse_datetime(value: str) -> datetime:
    """Dexatel's ``yyyy-MM-dd HH:mm:ss`` in UTC; ISO 8601 is read too (leniently), naive as UTC."""
    # fromisoformat reads "2026-11-23 01:25:09" as it is (and fast); a "Z" needs spelling out.
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def format_datetime(when: datetime) -> str:
    """A timezone-aware datetime as Dexatel's UTC ``yyyy-MM-dd HH:mm:ss``."""
    if when.tzinfo is None:
        raise ValueError("a naive datetime is ambiguous: give it a timezone")
    return when.astimezone(timezone.utc).strftime(DATE_FORMAT)


def normalize_number(raw: str) -> str | None:
    """The one form numbers take here: E.164, ``+`` then 7 to 15 digits.

    Spaces, dots, dashes and brackets are dropped and a leading ``00`` becomes ``+``; a number
    without ``+`` or ``00`` is taken to start with its country code, as Dexatel's own examples do.
    None when what is left is not such a number.
    """
    number = _SEPARATORS.sub("", raw)
    if number.startswith("00"):
        number = "+" + number[2:]
    elif not number.startswith("+"):
        number = "+" + number
    return number if _E164.match(number) else None


def check_contact_fields(attributes: Mapping[str, object]) -> tuple[dict[str, str], list[Problem]]:
    """The contact fields of ``attributes`` under their canonical names, and what is wrong."""
    fields: dict[str, str] = {}
    problems: list[Problem] = []
    for name, value in attributes.items():
        canonical = FIELD_ALIASES.get(name, name)
        limit = CONTACT_FIELDS.get(canonical)
        if limit is None:
            problems.append(
                Problem(
                    f"Dexatel contacts have no field {name!r}; they have "
                    f"{', '.join(CONTACT_FIELDS)}",
                    field=name,
                )
            )
        elif not isinstance(value, str):
            problems.append(Problem(f"must be a string, not {type(value).__name__}", field=name))
        elif not is_text(value):
            problems.append(Problem("not valid text (a lone surrogate?)", field=name))
        elif len(value) > limit:
            problems.append(Problem(f"longer than {limit} characters", field=name))
        elif canonical in fields and fields[canonical] != value:
            problems.append(Problem(f"given twice (as {canonical} and an alias)", field=name))
        else:
            fields[canonical] = value
    return fields, problems


def wire_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Canonical contact fields under the names sent on the wire."""
    return {WIRE_NAMES.get(name, name): value for name, value in fields.items()}


class CampaignStatus(OpenEnum):
    """A campaign's status; Dexatel writes these in lower case (``canceled`` with one l)."""

    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> CampaignStatus:
        if isinstance(value, str):
            for member in cls:
                if member.value == value.lower():
                    return member
        return cls.UNKNOWN

    @property
    def finished(self) -> bool:
        return self in (CampaignStatus.COMPLETED, CampaignStatus.FAILED, CampaignStatus.CANCELED)


@attrs.frozen(kw_only=True)
class DexatelAudience:
    id: str
    name: str
    channel: Channel = Channel.UNKNOWN
    account_id: str | None = None
    contacts_count: int | None = None
    create_date: datetime | None = None
    update_date: datetime | None = None
    links: Mapping[str, str] = attrs.field(factory=dict)
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class DexatelContact:
    id: str
    number: str
    audience_id: str | None = None
    account_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    custom1: str | None = None
    custom2: str | None = None
    create_date: datetime | None = None
    update_date: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def fields(self) -> dict[str, str]:
        """The contact fields that are set, under their canonical names."""
        values = {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "custom1": self.custom1,
            "custom2": self.custom2,
        }
        return {name: value for name, value in values.items() if value is not None}


@attrs.frozen(kw_only=True)
class DexatelTemplate:
    id: str
    name: str | None = None
    text: str | None = None
    channel: Channel = Channel.UNKNOWN
    status: str | None = None
    create_date: datetime | None = None
    update_date: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Messages:
    total: int = 0
    delivered: int = 0
    failed: int = 0


@attrs.frozen(kw_only=True)
class DexatelCampaign:
    id: str
    name: str | None = None
    status: CampaignStatus = CampaignStatus.UNKNOWN
    schedule: datetime | None = None
    channel: Channel = Channel.UNKNOWN
    audience_id: str | None = None
    template_id: str | None = None
    messages: Messages = attrs.field(factory=Messages)
    create_date: datetime | None = None
    update_date: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)


converter = make_converter(parse_datetime)
converter.register_structure_hook(CampaignStatus, lambda v, _: CampaignStatus(v))


def contact_from_wire(data: Mapping[str, Any]) -> dict[str, Any]:
    """A contact body with its number in E.164 and its custom fields under canonical names
    (either spelling is read). A number stored in another spelling is kept in ``extra``."""
    out = dict(data)
    for legacy, canonical in FIELD_ALIASES.items():
        if legacy in out:
            value = out.pop(legacy)
            if out.get(canonical) is None:
                out[canonical] = value
    stored = out.get("number")
    if isinstance(stored, str):
        number = read_number(stored)
        if number != stored:
            out["number"], out["stored_number"] = number, stored
    return out


def read_number(stored: str) -> str:
    """A number as Dexatel stored it (another client may have left out the "+"), in E.164.

    One that is not a phone number at all is returned as stored: it names a contact all the
    same, and reading an audience must not fail on it.
    """
    if stored.startswith("+") and _E164.match(stored):
        return stored
    return normalize_number(stored) or stored


_READ_FIELDS = (("first_name", None), ("last_name", None), ("custom1", "timestamp"),
                ("custom2", "date"))  # fmt: skip


def member_from_wire(data: Any, *, redact: Callable[[str], str]) -> Member:
    """A contact body as a member: its number in E.164, and the contact fields that are set."""
    number = data.get("number") if isinstance(data, Mapping) else None
    if not isinstance(number, str):
        raise unexpected(
            "dexatel listed a contact without a number", provider=PROVIDER, redact=redact, body=data
        )
    fields = {}
    for name, legacy in _READ_FIELDS:
        value = data.get(name)
        if value is None and legacy is not None:
            value = data.get(legacy)
        if value is not None:
            fields[name] = value
    return Member(read_number(number), attributes=fields)


def next_page_token(link: object) -> str | None:
    """The ``page_token`` in ``pagination.links.next``: a query string or an absolute URL."""
    if not isinstance(link, str) or not link:
        return None
    query = urlsplit(link).query if "?" in link else link
    tokens = parse_qs(query.lstrip("?")).get("page_token")
    return tokens[0] if tokens and tokens[0] else None


#: Codes whose meaning the status does not tell (the statuses of most are undocumented). An
#: "invalid identifier" (1302 audience, 1352 contact, 1602 campaign; 1252 is assumed to be the
#: template's) means that nothing can have that id: not found, whatever the status.
NOT_FOUND_CODES = frozenset({1251, 1252, 1301, 1302, 1351, 1352, 1402, 1601, 1602})
CONFLICT_CODES = frozenset({1258, 1309, 1360, 1441})


def error_detail(response: httpx.Response, body: Any) -> ErrorDetail:
    """Read ``{"errors": [{"code", "message", ...}]}``; fall back to a top-level message."""
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            first = errors[0]
            code = first.get("code")
            message = str(first.get("message") or response.reason_phrase)
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more: see .body)"
            kind: type[APIStatusError] | None = None
            if code in NOT_FOUND_CODES:
                kind = NotFoundError
            elif code in CONFLICT_CODES:
                kind = ConflictError
            return ErrorDetail(message, code=code if isinstance(code, int) else None, kind=kind)
        if "message" in body:
            return ErrorDetail(str(body["message"]))
    return ErrorDetail(str(body)[:500] if body else response.reason_phrase)
