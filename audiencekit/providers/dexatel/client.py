"""``DexatelClient``: every Dexatel audience, contact, campaign and template call, typed.

One method, one request (lists are pagers: one request a page). Write bodies are wrapped in
``{"data": ...}``; answers are unwrapped and read into attrs models. Bad input is refused with a
:class:`~audiencekit.ValidationError` before anything is sent.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ...errors import Problem, ValidationError
from ...models import Channel, Member
from ..base import (
    AsyncPager,
    CallStats,
    ClientOptions,
    Page,
    PollPolicy,
    ProviderClient,
    Transport,
    credential,
    wait_until,
)
from ..wire import dumps, structure
from .wire import (
    AUDIENCE_NAME_RE,
    MAX_INITIAL_CONTACTS,
    MAX_TEMPLATE_NAME,
    MAX_TEMPLATE_TEXT,
    PROVIDER,
    CampaignStatus,
    DexatelAudience,
    DexatelCampaign,
    DexatelContact,
    DexatelTemplate,
    check_contact_fields,
    contact_from_wire,
    converter,
    error_detail,
    format_datetime,
    member_from_wire,
    next_page_token,
    normalize_number,
    wire_fields,
)

__all__ = ["API_KEY_ENV", "DEFAULT_BASE_URL", "DexatelClient"]

DEFAULT_BASE_URL = "https://api.dexatel.com/v1"
API_KEY_ENV = "DEXATEL_API_KEY"
BASE_URL_ENV = "DEXATEL_BASE_URL"
#: The page size asked for; Dexatel documents no maximum, and the pagers never rely on it.
DEFAULT_PAGE_SIZE = 100

M = TypeVar("M")


class DexatelClient(ProviderClient):
    """Dexatel's REST calls. The key comes from ``api_key``, else ``DEXATEL_API_KEY``.

    How it connects is a :class:`~audiencekit.providers.base.ClientOptions` (``options``;
    keyword arguments such as ``base_url=`` or ``timeout=`` change single fields of it). By
    default: ``DEXATEL_BASE_URL`` when set, else ``https://api.dexatel.com/v1``, and no rate
    ceiling (Dexatel publishes none).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        options: ClientOptions | None = None,
        **changes: Any,
    ) -> None:
        api_key = credential(api_key, API_KEY_ENV, "dexatel API key (api_key=)")
        options = ClientOptions.of(options, **changes).for_provider(
            base_url=DEFAULT_BASE_URL, rate_limit=math.inf, base_url_env=BASE_URL_ENV
        )
        self.transport = Transport(
            provider=PROVIDER,
            auth_headers={"X-Dexatel-Key": api_key},
            parse_error=error_detail,
            options=options,
            rate_scope=api_key,
        )

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        replay_safe: bool,
        stats: CallStats | None = None,
        params: Mapping[str, str] | None = None,
        template: str | None = None,
    ) -> Any:
        content = None if data is None else dumps({"data": data})
        response = await self.transport.request(
            method, path, content=content, params=params, replay_safe=replay_safe, stats=stats,
            template=template,
        )  # fmt: skip
        if response.status_code == 204 or not response.content:
            return None
        body = self.transport.read_json(response)
        if not isinstance(body, Mapping) or "data" not in body:
            raise self.transport.unexpected(f"dexatel answered {path} without 'data'", body)
        return body["data"]

    def _one(self, data: Any, cls: type[M]) -> M:
        if cls is DexatelContact and isinstance(data, Mapping):
            data = contact_from_wire(data)
        return structure(converter, data, cls, provider=PROVIDER, redact=self.transport.redact)

    def _pager(
        self,
        path: str,
        cls: type[M] | Callable[[Any], M],
        filters: Mapping[str, str | None],
        page_size: int,
        what: str,
        template: str | None = None,
    ) -> AsyncPager[M]:
        """A pager over a Dexatel list; each item read into ``cls`` (a model, or a function),
        and yielded once by its ``id`` (a member's is its number)."""
        if not 1 <= page_size <= 1_000:
            raise ValidationError([Problem("page_size must be between 1 and 1000")])
        base = {k: v for k, v in filters.items() if v is not None}
        read: Callable[[Any], M] = (
            (lambda item: self._one(item, cls)) if isinstance(cls, type) else cls
        )

        async def fetch(token: str | None) -> Page[M]:
            params = base | {"page_size": str(page_size)}
            if token is not None:
                params["page_token"] = token
            response = await self.transport.request(
                "GET", path, params=params, replay_safe=True, template=template
            )
            body = self.transport.read_json(response)
            if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
                raise self.transport.unexpected(
                    f"dexatel answered {path} without a 'data' list", body
                )
            pagination = body.get("pagination") or {}
            links = pagination.get("links") or {} if isinstance(pagination, Mapping) else {}
            return Page(
                [read(item) for item in body["data"]],
                next_page_token(links.get("next") if isinstance(links, Mapping) else None),
                pagination.get("total") if isinstance(pagination, Mapping) else None,
            )

        return AsyncPager(fetch, provider=PROVIDER, what=what, key=_item_id)

    # -- audiences ------------------------------------------------------------------------------

    def list_audiences(
        self, *, channel: Channel | str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncPager[DexatelAudience]:
        """Every audience of the account (``filter[channel]`` when given)."""
        value = None if channel is None else _channel(channel).value
        return self._pager(
            "/audiences", DexatelAudience, {"filter[channel]": value}, page_size, "audiences"
        )

    async def create_audience(
        self,
        name: str,
        channel: Channel | str,
        *,
        contacts: Sequence[Mapping[str, str]] = (),
    ) -> DexatelAudience:
        """Create an audience, with up to 1,000 initial contacts (``number`` plus fields)."""
        problems = _name_problems(name)
        wire_contacts = []
        if len(contacts) > MAX_INITIAL_CONTACTS:
            problems.append(
                Problem(f"{len(contacts)} contacts; at most {MAX_INITIAL_CONTACTS} on creation")
            )
        for contact in contacts:
            fields = dict(contact)
            number, more = _number(fields.pop("number", None))
            checked, bad = check_contact_fields(fields)
            problems += more + [attrs_with_id(p, number) for p in bad]
            wire_contacts.append({"number": number} | wire_fields(checked))
        data: dict[str, Any] = {"name": name, "channel": _channel(channel).value}
        if wire_contacts:
            data["contacts"] = wire_contacts
        _raise(problems)
        found = await self._call("POST", "/audiences", data=data, replay_safe=False)
        return self._one(found, DexatelAudience)

    async def get_audience(self, audience_id: str) -> DexatelAudience:
        found = await self._call(
            "GET", f"/audiences/{_id(audience_id)}", replay_safe=True, template=_AUDIENCE
        )
        return self._one(found, DexatelAudience)

    async def update_audience(self, audience_id: str, *, name: str) -> DexatelAudience:
        """Rename an audience (its name is the only field that can change)."""
        _raise(_name_problems(name))
        found = await self._call(
            "PUT",
            f"/audiences/{_id(audience_id)}",
            data={"name": name},
            replay_safe=True,
            template=_AUDIENCE,
        )
        return self._one(found, DexatelAudience)

    async def delete_audience(self, audience_id: str) -> None:
        await self._call(
            "DELETE", f"/audiences/{_id(audience_id)}", replay_safe=True, template=_AUDIENCE
        )

    # -- contacts -------------------------------------------------------------------------------

    def list_contacts(
        self, audience_id: str, *, search: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncPager[DexatelContact]:
        """The contacts of an audience (``filter[search]`` matches numbers and names)."""
        return self._pager(
            f"/audiences/{_id(audience_id)}/contacts",
            DexatelContact,
            {"filter[search]": search},
            page_size,
            "contacts",
            _CONTACTS,
        )

    def list_members(
        self, audience_id: str, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncPager[Member]:
        """The contacts of an audience read straight into members (number and the fields that
        are set): the quick way to read a large audience."""
        return self._pager(
            f"/audiences/{_id(audience_id)}/contacts",
            functools.partial(member_from_wire, redact=self.transport.redact),
            {},
            page_size,
            "contacts",
            _CONTACTS,
        )

    async def create_contact(
        self,
        audience_id: str,
        number: str,
        *,
        stats: CallStats | None = None,
        **fields: str,
    ) -> DexatelContact:
        """Add one contact; ``fields`` are first_name, last_name, custom1/timestamp,
        custom2/date. Not safe to replay: see DexatelBackend for the idempotent way."""
        normalized, problems = _number(number)
        checked, bad = check_contact_fields(fields)
        _raise(problems + [attrs_with_id(p, normalized) for p in bad])
        data = {"number": normalized} | wire_fields(checked)
        found = await self._call(
            "POST",
            f"/audiences/{_id(audience_id)}/contacts",
            data=data,
            replay_safe=False,
            stats=stats,
            template=_CONTACTS,
        )
        return self._one(found, DexatelContact)

    async def get_contact(self, audience_id: str, contact_id: str) -> DexatelContact:
        found = await self._call(
            "GET",
            f"/audiences/{_id(audience_id)}/contacts/{_id(contact_id)}",
            replay_safe=True,
            template=_CONTACT,
        )
        return self._one(found, DexatelContact)

    async def update_contact(
        self,
        audience_id: str,
        contact_id: str,
        *,
        stats: CallStats | None = None,
        **fields: str,
    ) -> DexatelContact:
        """Change a contact's fields (its number cannot change)."""
        checked, bad = check_contact_fields(fields)
        _raise(bad)
        found = await self._call(
            "PUT",
            f"/audiences/{_id(audience_id)}/contacts/{_id(contact_id)}",
            data=wire_fields(checked),
            replay_safe=True,
            stats=stats,
            template=_CONTACT,
        )
        return self._one(found, DexatelContact)

    async def delete_contact(
        self, audience_id: str, contact_id: str, *, stats: CallStats | None = None
    ) -> None:
        await self._call(
            "DELETE",
            f"/audiences/{_id(audience_id)}/contacts/{_id(contact_id)}",
            replay_safe=True,
            stats=stats,
            template=_CONTACT,
        )

    # -- templates ------------------------------------------------------------------------------

    def list_templates(
        self,
        *,
        name: str | None = None,
        channel: Channel | str | None = None,
        status: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncPager[DexatelTemplate]:
        filters = {
            "filter[name]": name,
            "filter[channel]": None if channel is None else _channel(channel).value,
            "filter[status]": status,
        }
        return self._pager("/templates", DexatelTemplate, filters, page_size, "templates")

    async def create_template(
        self, *, channel: Channel | str, text: str | None = None, name: str | None = None,
        **extra: Any,
    ) -> DexatelTemplate:  # fmt: skip
        """Create a template; ``extra`` passes media and WhatsApp fields (``wa_sender_code``...)."""
        data = {"channel": _channel(channel).value} | _template_fields(name, text) | extra
        found = await self._call("POST", "/templates", data=data, replay_safe=False)
        return self._one(found, DexatelTemplate)

    async def get_template(self, template_id: str) -> DexatelTemplate:
        found = await self._call(
            "GET", f"/templates/{_id(template_id)}", replay_safe=True, template=_TEMPLATE
        )
        return self._one(found, DexatelTemplate)

    async def update_template(
        self, template_id: str, *, name: str | None = None, text: str | None = None
    ) -> DexatelTemplate:
        data = _template_fields(name, text)
        found = await self._call(
            "PUT", f"/templates/{_id(template_id)}", data=data, replay_safe=True, template=_TEMPLATE
        )
        return self._one(found, DexatelTemplate)

    async def delete_template(self, template_id: str) -> None:
        await self._call(
            "DELETE", f"/templates/{_id(template_id)}", replay_safe=True, template=_TEMPLATE
        )

    # -- campaigns ------------------------------------------------------------------------------

    def list_campaigns(
        self, *, channel: Channel | str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncPager[DexatelCampaign]:
        value = None if channel is None else _channel(channel).value
        return self._pager(
            "/campaigns", DexatelCampaign, {"filter[channel]": value}, page_size, "campaigns"
        )

    async def create_campaign(
        self,
        *,
        sender: str,
        audience_id: str,
        template_id: str,
        schedule: datetime | None = None,
        name: str | None = None,
    ) -> DexatelCampaign:
        """Send ``template_id`` to ``audience_id`` from ``sender`` now, or at ``schedule`` (a
        timezone-aware datetime). The body's field names are inferred from the error codes."""
        if not sender:
            raise ValidationError([Problem("a campaign needs a sender", field="from")])
        data: dict[str, Any] = {
            "from": sender,
            "audience": _id(audience_id),
            "template": _id(template_id),
        }
        if schedule is not None:
            data["schedule"] = _schedule(schedule)
        if name is not None:
            data["name"] = name
        found = await self._call("POST", "/campaigns", data=data, replay_safe=False)
        return self._one(found, DexatelCampaign)

    async def get_campaign(self, campaign_id: str) -> DexatelCampaign:
        found = await self._call(
            "GET", f"/campaigns/{_id(campaign_id)}", replay_safe=True, template=_CAMPAIGN
        )
        return self._one(found, DexatelCampaign)

    async def update_campaign(
        self, campaign_id: str, *, name: str | None = None, schedule: datetime | None = None
    ) -> DexatelCampaign:
        """Rename or reschedule a campaign that is still scheduled."""
        data: dict[str, Any] = {}
        if name is not None:
            data["name"] = name
        if schedule is not None:
            data["schedule"] = _schedule(schedule)
        if not data:
            raise ValidationError([Problem("nothing to update: give a name or a schedule")])
        found = await self._call(
            "PUT", f"/campaigns/{_id(campaign_id)}", data=data, replay_safe=True, template=_CAMPAIGN
        )
        return self._one(found, DexatelCampaign)

    async def cancel_campaign(self, campaign_id: str) -> DexatelCampaign:
        """Cancel a scheduled campaign (assumed payload: ``{"status": "canceled"}``)."""
        found = await self._call(
            "PUT",
            f"/campaigns/{_id(campaign_id)}",
            data={"status": CampaignStatus.CANCELED.value},
            replay_safe=True,
            template=_CAMPAIGN,
        )
        return self._one(found, DexatelCampaign)

    async def delete_campaign(self, campaign_id: str) -> None:
        await self._call(
            "DELETE", f"/campaigns/{_id(campaign_id)}", replay_safe=True, template=_CAMPAIGN
        )

    async def wait_for_campaign(self, campaign_id: str, *, policy: PollPolicy) -> DexatelCampaign:
        """Poll until the campaign is completed, failed or canceled; raises
        :class:`~audiencekit.PollTimeoutError` (with the campaign id) past ``policy.max_wait``."""

        async def probe() -> DexatelCampaign | None:
            campaign = await self.get_campaign(campaign_id)
            return campaign if campaign.status.finished else None

        polled = await wait_until(
            probe,
            policy=policy,
            pending=lambda: [campaign_id],
            sleep=self.transport.sleep,
            clock=self.transport.clock,
        )
        return polled.value


#: The templates of the paths with ids in them: the names of their spans in telemetry.
_AUDIENCE = "/audiences/{audience_id}"
_CONTACTS = "/audiences/{audience_id}/contacts"
_CONTACT = "/audiences/{audience_id}/contacts/{contact_id}"
_TEMPLATE = "/templates/{template_id}"
_CAMPAIGN = "/campaigns/{campaign_id}"


def _item_id(item: Any) -> str:
    """The id of a listed item: every Dexatel model has one, as a member has its number."""
    return str(item.id)


def attrs_with_id(problem: Problem, member_id: str) -> Problem:
    return Problem(problem.message, id=member_id, field=problem.field)


def _raise(problems: list[Problem]) -> None:
    if problems:
        raise ValidationError(problems)


def _number(raw: object) -> tuple[str, list[Problem]]:
    if not isinstance(raw, str) or not raw:
        return "", [Problem("a contact needs a number", field="number")]
    normalized = normalize_number(raw)
    if normalized is None:
        return raw, [Problem("not a phone number (E.164: + and 7 to 15 digits)", id=raw)]
    return normalized, []


def _name_problems(name: object) -> list[Problem]:
    if not isinstance(name, str) or not AUDIENCE_NAME_RE.match(name):
        shown = name if isinstance(name, str) else None
        return [
            Problem(
                "a Dexatel audience name is 1 to 45 letters, digits, '-' or '_'",
                id=shown,
                field="name",
            )
        ]
    return []


def _channel(channel: Channel | str) -> Channel:
    value = Channel(channel)
    if value is Channel.UNKNOWN:
        raise ValidationError([Problem(f"channel must be SMS, VIBER or WHATSAPP, not {channel!r}")])
    return value


def _id(value: object) -> str:
    if not isinstance(value, str) or not value or "/" in value or "?" in value:
        raise ValidationError([Problem(f"not a Dexatel id: {value!r}")])
    return value


def _schedule(when: datetime) -> str:
    try:
        return format_datetime(when)
    except ValueError:
        raise ValidationError(
            [Problem("a schedule must be a timezone-aware datetime", field="schedule")]
        ) from None


def _template_fields(name: str | None, text: str | None) -> dict[str, str]:
    problems = []
    data = {}
    if name is not None:
        if len(name) > MAX_TEMPLATE_NAME:
            problems.append(Problem(f"longer than {MAX_TEMPLATE_NAME}", field="name"))
        data["name"] = name
    if text is not None:
        if len(text) > MAX_TEMPLATE_TEXT:
            problems.append(Problem(f"longer than {MAX_TEMPLATE_TEXT}", field="text"))
        data["text"] = text
    _raise(problems)
    return data
