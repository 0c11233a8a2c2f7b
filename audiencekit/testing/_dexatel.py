"""A local emulator of Dexatel's REST API: audiences, contacts, templates, campaigns.

It follows ``shared/provider-docs/dexatel-reference.md`` §9. Where the reference marks a fact as
inferred or unknown, the behaviour here is an assumption; each is a field of
:class:`DexatelConfig` (so it can be switched) and says so in its comment.
"""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ._app import EmulatorApp, ProviderError, json_response, request_json
from ._faults import FaultPlan

__all__ = ["DEFAULT_DEXATEL_KEY", "DexatelConfig", "DexatelEmulator"]

DEFAULT_DEXATEL_KEY = "dexatel-emulator-key"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
CHANNELS = ("SMS", "VIBER", "WHATSAPP")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,45}$")
# Inferred: the number format is not documented. E.164-like: an optional "+", then 7 to 15 digits,
# the first not 0 (spaces, dashes, dots and brackets are not accepted).
NUMBER_RE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
CONTACT_LIMITS = {"first_name": (32, 1361), "last_name": (32, 1362)}
# The two custom fields, under their legacy names (timestamp, date) and current ones (custom1/2).
CUSTOM_FIELDS = {"custom1": ("timestamp", 32, 1363), "custom2": ("date", 70, 1364)}


@attrs.define(kw_only=True)
class DexatelConfig:
    """Settings of the emulator; the comment on each inferred one says what the reference says."""

    #: API key → account name. Each account has its own audiences, templates and campaigns.
    keys: Mapping[str, str] = attrs.field(factory=lambda: {DEFAULT_DEXATEL_KEY: "account"})
    #: Invented: no numeric code for a missing or wrong key is documented.
    auth_error_code: int = 1001
    #: Unknown upstream: page size when the request gives none, and the most it honours.
    default_page_size: int = 20
    max_page_size: int = 100
    #: A field report, not documented Dexatel behaviour: every listing answers the first page's
    #: items again and again, each time with a fresh next token and no total.
    endless_pages: bool = False
    #: Unconfirmed upstream: whether POST .../contacts takes an array (≤ 1000). Off, as advised.
    bulk_contacts: bool = False
    #: Unknown upstream: which names the contact's custom fields come back under.
    #: "legacy" answers timestamp/date (the original pages), "current" answers custom1/custom2.
    contact_field_names: str = "legacy"
    #: Inferred: two spellings of one number ("+374..." and "374...") are the same contact.
    numbers_match_ignoring_plus: bool = True
    #: Unknown upstream: how a number is stored and answered. "as_sent" keeps the spelling of
    #: the request that created it (the examples show both); "digits" drops the "+" (as if
    #: another tool had created every contact without it); "plus" always adds it.
    number_storage: str = attrs.field(
        default="as_sent", validator=attrs.validators.in_(("as_sent", "digits", "plus"))
    )
    #: Inferred: the largest audience a campaign may target (the docs say 100,000 numbers).
    max_campaign_audience: int = 100_000
    #: How long a campaign stays in_progress before it completes (emulator only).
    campaign_duration: float = 1.0
    #: Unknown upstream: template status of non-SMS templates (SMS ones are COMPLETED).
    other_template_status: str = "COMPLETED"
    #: The clock, for dates and campaign schedules.
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)


@attrs.define
class _Contact:
    id: str
    account_id: str
    audience_id: str
    number: str
    first_name: str | None
    last_name: str | None
    custom1: str | None
    custom2: str | None
    created: datetime
    updated: datetime


@attrs.define
class _Audience:
    id: str
    account_id: str
    name: str
    channel: str
    created: datetime
    updated: datetime
    contacts: dict[str, _Contact] = attrs.field(factory=dict)
    by_number: dict[str, str] = attrs.field(factory=dict)


@attrs.define
class _Template:
    id: str
    account_id: str
    name: str | None
    text: str | None
    channel: str
    status: str
    created: datetime
    updated: datetime
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class _Campaign:
    id: str
    account_id: str
    name: str | None
    sender: str
    audience_id: str
    template_id: str
    channel: str
    schedule: datetime | None
    created: datetime
    updated: datetime
    canceled: bool = False
    total: int = 0


@attrs.define
class _Account:
    id: str
    audiences: dict[str, _Audience] = attrs.field(factory=dict)
    templates: dict[str, _Template] = attrs.field(factory=dict)
    campaigns: dict[str, _Campaign] = attrs.field(factory=dict)


def _fmt(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(timezone.utc).strftime(DATE_FORMAT)


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    kind, _, offset = raw.partition(":")
    if kind != "o" or not offset.isdigit():
        raise ProviderError(400, "'page_token' is invalid", 1005)
    return int(offset)


class DexatelEmulator(EmulatorApp):
    """The Dexatel emulator as an ASGI app; serve it under any host, its routes start at /v1."""

    provider = "dexatel"
    url_path = "/v1"

    def __init__(
        self,
        config: DexatelConfig | None = None,
        *,
        faults: FaultPlan | None = None,
        log_bodies: bool = True,
    ) -> None:
        self.config = config or DexatelConfig()
        self.accounts: dict[str, _Account] = {}
        super().__init__(faults=faults, log_bodies=log_bodies)

    # -- EmulatorApp ----------------------------------------------------------------------------

    def connection(self, url: str) -> dict[str, Any]:
        return {"base_url": url, "api_key": next(iter(self.config.keys), DEFAULT_DEXATEL_KEY)}

    def restore_defaults(self) -> None:
        self.config = DexatelConfig()

    def routes(self) -> list[BaseRoute]:
        r = Route
        return [
            r("/v1/audiences", self.list_audiences, methods=["GET"]),
            r("/v1/audiences", self.create_audience, methods=["POST"]),
            r("/v1/audiences/{aid}", self.get_audience, methods=["GET"]),
            r("/v1/audiences/{aid}", self.update_audience, methods=["PUT"]),
            r("/v1/audiences/{aid}", self.delete_audience, methods=["DELETE"]),
            r("/v1/audiences/{aid}/contacts", self.list_contacts, methods=["GET"]),
            r("/v1/audiences/{aid}/contacts", self.create_contact, methods=["POST"]),
            r("/v1/audiences/{aid}/contacts/{cid}", self.get_contact, methods=["GET"]),
            r("/v1/audiences/{aid}/contacts/{cid}", self.update_contact, methods=["PUT"]),
            r("/v1/audiences/{aid}/contacts/{cid}", self.delete_contact, methods=["DELETE"]),
            r("/v1/templates", self.list_templates, methods=["GET"]),
            r("/v1/templates", self.create_template, methods=["POST"]),
            r("/v1/templates/{tid}", self.get_template, methods=["GET"]),
            r("/v1/templates/{tid}", self.update_template, methods=["PUT"]),
            r("/v1/templates/{tid}", self.delete_template, methods=["DELETE"]),
            r("/v1/campaigns", self.list_campaigns, methods=["GET"]),
            r("/v1/campaigns", self.create_campaign, methods=["POST"]),
            r("/v1/campaigns/{cid}", self.get_campaign, methods=["GET"]),
            r("/v1/campaigns/{cid}", self.update_campaign, methods=["PUT"]),
            r("/v1/campaigns/{cid}", self.delete_campaign, methods=["DELETE"]),
        ]

    def error_body(self, request: Request, status: int, message: str, code: Any) -> Any:
        return {
            "errors": [
                {
                    "timestamp": _fmt(self.config.now()),
                    "path": request.url.path,
                    "method": request.method,
                    "status": status,
                    "message": message,
                    "code": code,
                }
            ]
        }

    def default_code(self, status: int) -> int | None:
        return {401: self.config.auth_error_code, 429: None}.get(status)

    def clear(self) -> None:
        self.accounts.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            name: {
                "account_id": account.id,
                "audiences": [
                    self._audience_json(a, full=True)
                    | {"contacts": [self._contact_json(c) for c in a.contacts.values()]}
                    for a in account.audiences.values()
                ],
                "templates": [self._template_json(t) for t in account.templates.values()],
                "campaigns": [self._campaign_json(c) for c in account.campaigns.values()],
            }
            for name, account in self.accounts.items()
        }

    def seed_contacts(self, audience_id: str, contacts: Iterable[Mapping[str, str]]) -> int:
        """Add contacts straight into an audience's state, without requests (for large test
        fixtures); each is a ``{"number": ..., "first_name": ...}`` mapping. Returns the count."""
        with self.lock:
            audience = next(
                (
                    a
                    for account in self.accounts.values()
                    for a in account.audiences.values()
                    if a.id == audience_id
                ),
                None,
            )
            if audience is None:
                raise LookupError(f"no audience {audience_id!r}")
            now = self.config.now()
            before = len(audience.contacts)
            for item in contacts:
                fields = self._check_contact(dict(item), new=True)
                self._insert_contact(audience, fields, now, duplicate_ok=True)
            return len(audience.contacts) - before

    def seed(self, data: Any) -> Any:
        """``{"audience_id": ..., "contacts": [{"number": ...}, ...]}`` → how many were added."""
        return {"added": self.seed_contacts(data["audience_id"], data["contacts"])}

    # -- plumbing -------------------------------------------------------------------------------

    def _account(self, request: Request) -> _Account:
        key = request.headers.get("x-dexatel-key")
        if not key or key not in self.config.keys:
            raise ProviderError(
                401, "The API key is missing or invalid", self.config.auth_error_code
            )
        name = self.config.keys[key]
        with self.lock:
            account = self.accounts.get(name)
            if account is None:
                account = self.accounts[name] = _Account(str(uuid.uuid4()))
        return account

    async def _data(
        self, request: Request, missing_code: int = 1007, *, required: bool = True
    ) -> Any:
        """The body's ``data``; a missing (or null) one is refused with ``missing_code`` unless
        the route's page lists it as optional (``required=False``): then it reads as ``{}``."""
        raw = await request.body()
        try:
            body = request_json(raw)
        except ValueError:
            raise ProviderError(400, "Invalid JSON body", 1005) from None
        data = body.get("data") if isinstance(body, dict) else None
        if data is None and (required or not isinstance(body, dict)):
            raise ProviderError(400, "Request data is missing: the 'data' field is required",
                                missing_code)  # fmt: skip
        return {} if data is None else data

    def _page(
        self, request: Request, items: Collection[Any], render: Callable[[Any], Any]
    ) -> Response:
        params = request.query_params
        raw_size = params.get("page_size")
        try:
            size = int(raw_size) if raw_size not in (None, "") else self.config.default_page_size
        except ValueError:
            raise ProviderError(400, "'page_size' is invalid", 1005) from None
        size = max(1, min(size, self.config.max_page_size))
        token = params.get("page_token")
        offset = _decode_token(token) if token else 0
        endless = self.config.endless_pages
        # islice, not a copy of the whole list: a long listing stays linear, page after page
        start = 0 if endless else offset
        page = list(itertools.islice(items, start, start + size))

        def link(at: int | None) -> str | None:
            if at is None:
                return None
            return f"?page_token={_encode_token(at)}&page_size={size}"

        has_next = endless or offset + size < len(items)
        pagination: dict[str, Any] = {
            "number": offset // size + 1,
            "size": len(page),
            "total": len(items),
            "links": {
                "first": link(0),
                "current": link(offset),
                "previous": link(max(0, offset - size)) if offset > 0 else None,
                "next": link(offset + size) if has_next else None,
            },
        }
        if endless:
            del pagination["total"]
        return json_response({"data": [render(item) for item in page], "pagination": pagination})

    def _find(self, table: Mapping[str, Any], key: str, bad: int, missing: int, what: str) -> Any:
        if not UUID_RE.match(key):
            raise ProviderError(400, f"Invalid {what} identifier", bad)
        found = table.get(key)
        if found is None:
            raise ProviderError(404, f"{what.capitalize()} is not found", missing)
        return found

    # -- audiences ------------------------------------------------------------------------------

    def _audience_json(self, audience: _Audience, *, full: bool) -> dict[str, Any]:
        base = f"/v1/audiences/{audience.id}"
        data: dict[str, Any] = {
            "id": audience.id,
            "account_id": audience.account_id,
            "name": audience.name,
            "channel": audience.channel,
            "create_date": _fmt(audience.created),
            "update_date": _fmt(audience.updated),
        }
        if full:
            data["contacts_count"] = len(audience.contacts)
            data["links"] = {"self": base, "account": "/v1/account", "contacts": f"{base}/contacts"}
        return data

    def _check_audience_name(self, account: _Account, name: Any, *, skip: str | None) -> str:
        if name is None or name == "":
            raise ProviderError(400, "'data.audience' name is required", 1303)
        if isinstance(name, str) and len(name) > 45:
            raise ProviderError(400, "'data.name' is too long", 1305)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ProviderError(400, "'data.name' is invalid", 1304)
        if any(a.name == name and a.id != skip for a in account.audiences.values()):
            raise ProviderError(409, "Audience already exists", 1309)
        return name

    async def list_audiences(self, request: Request) -> Response:
        account = self._account(request)
        channel = request.query_params.get("filter[channel]")
        with self.lock:
            items = [
                a for a in account.audiences.values() if not channel or a.channel == channel.upper()
            ]
        return self._page(request, items, lambda a: self._audience_json(a, full=False))

    async def create_audience(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request)
        if not isinstance(data, dict):
            raise ProviderError(400, "Request data is missing", 1007)
        channel = data.get("channel")
        if not channel:
            raise ProviderError(400, "'data.channel' is missing", 1306)
        if channel not in CHANNELS:
            raise ProviderError(400, "'data.channel' should be one of [SMS, WHATSAPP, VIBER]", 1307)
        contacts = data.get("contacts") or []
        if not isinstance(contacts, list):
            raise ProviderError(400, "'data.contacts' is invalid", 1308)
        if len(contacts) > 1000:
            raise ProviderError(400, "'data.contacts' must be at most 1000 items in length", 1308)
        with self.lock:
            name = self._check_audience_name(account, data.get("name"), skip=None)
            checked = [self._check_contact(item, new=True) for item in contacts]
            now = self.config.now()
            audience = _Audience(str(uuid.uuid4()), account.id, name, channel, now, now)
            for fields in checked:
                self._insert_contact(audience, fields, now, duplicate_ok=True)
            account.audiences[audience.id] = audience
            return json_response({"data": self._audience_json(audience, full=True)}, 201)

    async def get_audience(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            audience = self._audience(account, request)
            return json_response({"data": self._audience_json(audience, full=True)})

    def _audience(self, account: _Account, request: Request) -> _Audience:
        found: _Audience = self._find(
            account.audiences, request.path_params["aid"], 1302, 1301, "audience"
        )
        return found

    async def update_audience(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request)
        with self.lock:
            audience = self._audience(account, request)
            if not isinstance(data, dict):
                raise ProviderError(400, "Request data is missing", 1007)
            if "channel" in data and data["channel"] != audience.channel:
                # Inferred: "channel cannot be changed"; the code for it is not documented.
                raise ProviderError(400, "'data.channel' cannot be changed", 1307)
            if "name" in data:
                audience.name = self._check_audience_name(account, data["name"], skip=audience.id)
                audience.updated = self.config.now()
            return json_response({"data": self._audience_json(audience, full=True)})

    async def delete_audience(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            audience = self._audience(account, request)
            del account.audiences[audience.id]  # its contacts go with it
        return Response(status_code=204)

    # -- contacts -------------------------------------------------------------------------------

    def _number_key(self, number: str) -> str:
        return number.lstrip("+") if self.config.numbers_match_ignoring_plus else number

    def _stored_number(self, number: str) -> str:
        storage = self.config.number_storage
        if storage == "digits":
            return number.lstrip("+")
        if storage == "plus":
            return "+" + number.lstrip("+")
        return number

    def _check_contact(self, item: Any, *, new: bool) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ProviderError(400, "'data' is invalid", 1007)
        fields: dict[str, Any] = {}
        if new:
            number = item.get("number")
            if number is None or number == "":
                raise ProviderError(400, "'data.number' is required", 1353)
            if not isinstance(number, str) or len(number) > 45 or not NUMBER_RE.match(number):
                raise ProviderError(400, "'data.number' is invalid", 1354)
            fields["number"] = number
        elif "number" in item:
            # Inferred: the number of a contact cannot be changed; the code is our choice.
            raise ProviderError(400, "'data.number' is invalid: it cannot be changed", 1354)
        for name, (limit, code) in CONTACT_LIMITS.items():
            if item.get(name) is not None:
                value = item[name]
                if not isinstance(value, str) or len(value) > limit:
                    raise ProviderError(400, f"{name.replace('_', ' ').capitalize()} is too long",
                                        code)  # fmt: skip
                fields[name] = value
        for current, (legacy, limit, code) in CUSTOM_FIELDS.items():
            for spelling in (current, legacy):
                if item.get(spelling) is not None:
                    value = item[spelling]
                    if not isinstance(value, str) or len(value) > limit:
                        raise ProviderError(400, f"'data.{current}' is too long", code)
                    fields[current] = value
        tags = item.get("tags")
        if tags is not None and (not isinstance(tags, list) or len(tags) > 10):
            raise ProviderError(400, "'data.tags' must be at most [10] items in length", 1359)
        return fields

    def _insert_contact(
        self, audience: _Audience, fields: dict[str, Any], now: datetime, *, duplicate_ok: bool
    ) -> _Contact:
        key = self._number_key(fields["number"])
        existing = audience.by_number.get(key)
        if existing is not None:
            if duplicate_ok:
                return audience.contacts[existing]
            raise ProviderError(409, "Contact already exists", 1360)
        contact = _Contact(
            id=str(uuid.uuid4()),
            account_id=audience.account_id,
            audience_id=audience.id,
            number=self._stored_number(fields["number"]),
            first_name=fields.get("first_name"),
            last_name=fields.get("last_name"),
            custom1=fields.get("custom1"),
            custom2=fields.get("custom2"),
            created=now,
            updated=now,
        )
        audience.contacts[contact.id] = contact
        audience.by_number[key] = contact.id
        audience.updated = now
        return contact

    def _contact_json(self, contact: _Contact, *, links: bool = False) -> dict[str, Any]:
        legacy = self.config.contact_field_names == "legacy"
        data: dict[str, Any] = {
            "id": contact.id,
            "account_id": contact.account_id,
            "audience_id": contact.audience_id,
            "number": contact.number,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            ("timestamp" if legacy else "custom1"): contact.custom1,
            ("date" if legacy else "custom2"): contact.custom2,
            "create_date": _fmt(contact.created),
            "update_date": _fmt(contact.updated),
        }
        if links:
            base = f"/v1/audiences/{contact.audience_id}"
            data["links"] = {
                "self": f"{base}/contacts/{contact.id}",
                "account": "/v1/account",
                "audience": base,
            }
        return data

    def _contact(self, audience: _Audience, request: Request) -> _Contact:
        found: _Contact = self._find(
            audience.contacts, request.path_params["cid"], 1352, 1351, "contact"
        )
        return found

    async def list_contacts(self, request: Request) -> Response:
        account = self._account(request)
        search = (request.query_params.get("filter[search]") or "").lower()
        with self.lock:
            audience = self._audience(account, request)
            items: Collection[_Contact] = (
                [
                    c
                    for c in audience.contacts.values()
                    if any(
                        search in (v or "").lower() for v in (c.number, c.first_name, c.last_name)
                    )
                ]
                if search
                else audience.contacts.values()
            )
            return self._page(request, items, self._contact_json)

    async def create_contact(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request)
        with self.lock:
            audience = self._audience(account, request)
            now = self.config.now()
            if isinstance(data, list):
                if not self.config.bulk_contacts:
                    raise ProviderError(400, "'data' must be an object", 1007)
                if len(data) > 1000:
                    raise ProviderError(400, "'data' must be at most 1000 items in length", 1308)
                checked = [self._check_contact(item, new=True) for item in data]
                created = [
                    self._insert_contact(audience, fields, now, duplicate_ok=False)
                    for fields in checked
                ]
                return json_response({"data": [self._contact_json(c) for c in created]}, 201)
            fields = self._check_contact(data, new=True)
            contact = self._insert_contact(audience, fields, now, duplicate_ok=False)
            return json_response({"data": self._contact_json(contact, links=True)}, 201)

    async def get_contact(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            contact = self._contact(self._audience(account, request), request)
            return json_response({"data": self._contact_json(contact, links=True)})

    async def update_contact(self, request: Request) -> Response:
        account = self._account(request)
        # The Contacts: Update page lists data as optional: without it, nothing changes.
        data = await self._data(request, required=False)
        with self.lock:
            contact = self._contact(self._audience(account, request), request)
            fields = self._check_contact(data, new=False)
            for name, value in fields.items():
                setattr(contact, name, value)
            contact.updated = self.config.now()
            return json_response({"data": self._contact_json(contact, links=True)})

    async def delete_contact(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            audience = self._audience(account, request)
            contact = self._contact(audience, request)
            del audience.contacts[contact.id]
            del audience.by_number[self._number_key(contact.number)]
            audience.updated = self.config.now()
        return Response(status_code=204)

    # -- templates ------------------------------------------------------------------------------

    def _template_json(self, template: _Template) -> dict[str, Any]:
        return {
            "id": template.id,
            "account_id": template.account_id,
            "name": template.name,
            "text": template.text,
            "channel": template.channel,
            "status": template.status,
            "create_date": _fmt(template.created),
            "update_date": _fmt(template.updated),
            "links": {"self": f"/v1/templates/{template.id}", "account": "/v1/account"},
        } | template.extra

    def _check_template(
        self, account: _Account, data: dict[str, Any], channel: str, *, skip: str | None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if "text" in data or skip is None:
            text = data.get("text")
            if text is None or text == "":
                if skip is None and not data.get("url"):
                    raise ProviderError(400, "'data.text' is required", 1254)
            elif not isinstance(text, str):
                raise ProviderError(400, "'data.text' is invalid", 1255)
            elif len(text) > 1000:
                raise ProviderError(400, "'data.text' is too long", 1260)
            fields["text"] = text
        if "name" in data or skip is None:
            name = data.get("name")
            if name is None or name == "":
                if channel == "WHATSAPP":
                    raise ProviderError(400, "'data.name' is required", 1261)
            elif not isinstance(name, str):
                raise ProviderError(400, "'data.name' is invalid", 1259)
            elif len(name) > 45:
                raise ProviderError(400, "'data.name' is too long", 1263)
            elif any(t.name == name and t.id != skip for t in account.templates.values()):
                raise ProviderError(409, "'data.name' should be unique", 1258)
            fields["name"] = name or None
        return fields

    async def list_templates(self, request: Request) -> Response:
        account = self._account(request)
        q = request.query_params
        name, channel, status = (
            q.get("filter[name]"),
            q.get("filter[channel]"),
            q.get("filter[status]"),
        )
        with self.lock:
            items = [
                t
                for t in account.templates.values()
                if (not name or t.name == name)
                and (not channel or t.channel == channel.upper())
                and (not status or t.status == status.upper())
            ]
        return self._page(request, items, self._template_json)

    async def create_template(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request, missing_code=1253)
        if not isinstance(data, dict):
            raise ProviderError(400, "'data' is required", 1253)
        channel = data.get("channel")
        if not channel:
            raise ProviderError(400, "'data.channel' is required", 1256)
        if channel not in CHANNELS:
            raise ProviderError(400, "'data.channel' value should be: [SMS, VIBER, WHATSAPP]", 1257)
        if channel == "WHATSAPP" and not data.get("wa_sender_code"):
            raise ProviderError(400, "'data.wa_sender_code' required for WhatsApp template", 1241)
        with self.lock:
            fields = self._check_template(account, data, channel, skip=None)
            now = self.config.now()
            extra = {k: v for k, v in data.items() if k not in ("name", "text", "channel")}
            template = _Template(
                id=str(uuid.uuid4()),
                account_id=account.id,
                name=fields.get("name"),
                text=fields.get("text"),
                channel=channel,
                status="COMPLETED" if channel == "SMS" else self.config.other_template_status,
                created=now,
                updated=now,
                extra=extra,
            )
            account.templates[template.id] = template
            return json_response({"data": self._template_json(template)}, 201)

    def _template(self, account: _Account, request: Request) -> _Template:
        found: _Template = self._find(
            account.templates, request.path_params["tid"], 1251, 1251, "template"
        )
        return found

    async def get_template(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            return json_response({"data": self._template_json(self._template(account, request))})

    async def update_template(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request, missing_code=1253)
        with self.lock:
            template = self._template(account, request)
            if not isinstance(data, dict):
                raise ProviderError(400, "'data' is required", 1253)
            fields = self._check_template(account, data, template.channel, skip=template.id)
            for name, value in fields.items():
                setattr(template, name, value)
            template.updated = self.config.now()
            return json_response({"data": self._template_json(template)})

    async def delete_template(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            template = self._template(account, request)
            del account.templates[template.id]
        return Response(status_code=204)

    # -- campaigns ------------------------------------------------------------------------------

    def _status(self, campaign: _Campaign) -> str:
        if campaign.canceled:
            return "canceled"
        start = campaign.schedule or campaign.created
        now = self.config.now()
        if now < start:
            return "scheduled"
        if now < start + timedelta(seconds=self.config.campaign_duration):
            return "in_progress"
        return "completed"

    def _campaign_json(self, campaign: _Campaign) -> dict[str, Any]:
        status = self._status(campaign)
        total = campaign.total if status in ("in_progress", "completed") else 0
        return {
            "id": campaign.id,
            "account_id": campaign.account_id,
            "template_id": campaign.template_id,
            "audience_id": campaign.audience_id,
            "name": campaign.name,
            "status": status,
            "schedule": _fmt(campaign.schedule),
            "channel": campaign.channel,
            "create_date": _fmt(campaign.created),
            "update_date": _fmt(campaign.updated),
            "messages": {
                "total": total,
                "delivered": total if status == "completed" else 0,
                "failed": 0,
            },
            "links": {
                "self": f"/v1/campaigns/{campaign.id}",
                "account": "/v1/account",
                "template": f"/v1/templates/{campaign.template_id}",
                "audience": f"/v1/audiences/{campaign.audience_id}",
            },
        }

    def _schedule(self, value: Any) -> datetime | None:
        if value is None or value == "":
            return None
        try:
            when = datetime.strptime(str(value), DATE_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            raise ProviderError(400, "'data.schedule' is invalid", 1609) from None
        if when <= self.config.now():
            raise ProviderError(400, "Schedule date should be after current date", 1522)
        return when

    async def list_campaigns(self, request: Request) -> Response:
        account = self._account(request)
        channel = request.query_params.get("filter[channel]")
        with self.lock:
            items = [
                c for c in account.campaigns.values() if not channel or c.channel == channel.upper()
            ]
        return self._page(request, items, self._campaign_json)

    async def create_campaign(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request)
        if not isinstance(data, dict):
            raise ProviderError(400, "Request data is missing", 1007)
        for key, required, invalid in (
            ("from", 1603, 1604),
            ("audience", 1605, 1606),
            ("template", 1607, 1608),
        ):
            if data.get(key) in (None, ""):
                raise ProviderError(400, f"'data.{key}' is required", required)
            if not isinstance(data[key], str):
                raise ProviderError(400, f"'data.{key}' is invalid", invalid)
        with self.lock:
            audience = account.audiences.get(data["audience"])
            if audience is None:
                raise ProviderError(400, "'data.audience' is invalid", 1606)
            template = account.templates.get(data["template"])
            if template is None:
                raise ProviderError(400, "'data.template' is invalid", 1608)
            if audience.channel != template.channel:
                raise ProviderError(400, "Campaign audience and template do not match", 1613)
            if len(audience.contacts) > self.config.max_campaign_audience:
                raise ProviderError(400, "'data.audience' is invalid: too many contacts", 1606)
            name = data.get("name")
            if name is not None and not isinstance(name, str):
                raise ProviderError(400, "'data.name' is invalid", 1604)
            now = self.config.now()
            campaign = _Campaign(
                id=str(uuid.uuid4()),
                account_id=account.id,
                name=name,
                sender=data["from"],
                audience_id=audience.id,
                template_id=template.id,
                channel=audience.channel,
                schedule=self._schedule(data.get("schedule")),
                created=now,
                updated=now,
                total=len(audience.contacts),
            )
            account.campaigns[campaign.id] = campaign
            return json_response({"data": self._campaign_json(campaign)}, 201)

    def _campaign(self, account: _Account, request: Request) -> _Campaign:
        found: _Campaign = self._find(
            account.campaigns, request.path_params["cid"], 1602, 1601, "campaign"
        )
        return found

    async def get_campaign(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            return json_response({"data": self._campaign_json(self._campaign(account, request))})

    async def update_campaign(self, request: Request) -> Response:
        account = self._account(request)
        data = await self._data(request)
        with self.lock:
            campaign = self._campaign(account, request)
            if not isinstance(data, dict):
                raise ProviderError(400, "Request data is missing", 1007)
            # Every field is checked before any is applied: a refused update changes nothing.
            scheduled = self._status(campaign) == "scheduled"
            cancel = "status" in data
            if cancel and (data["status"] != "canceled" or not scheduled):
                raise ProviderError(400, "'data.status' can not be changed", 1611)
            if not cancel and set(data) & {"name", "schedule"} and not scheduled:
                # Inferred: details change only while the campaign is scheduled.
                raise ProviderError(400, "'data.status' can not be changed", 1611)
            name = data.get("name", campaign.name)
            if name is not None and not isinstance(name, str):
                raise ProviderError(400, "'data.name' is invalid", 1604)
            schedule = self._schedule(data["schedule"]) if "schedule" in data else campaign.schedule
            campaign.name, campaign.schedule = name, schedule
            campaign.canceled = campaign.canceled or cancel
            campaign.updated = self.config.now()
            return json_response({"data": self._campaign_json(campaign)})

    async def delete_campaign(self, request: Request) -> Response:
        account = self._account(request)
        with self.lock:
            campaign = self._campaign(account, request)
            if self._status(campaign) == "in_progress":
                # Inferred: a campaign that is sending cannot be deleted.
                raise ProviderError(400, "Campaign cannot be deleted", 1612)
            del account.campaigns[campaign.id]
        return Response(status_code=204)
