"""DexatelClient: every endpoint against the emulator, and the exact bodies sent (respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import respx

from audiencekit import (
    APIError,
    AuthenticationError,
    Channel,
    NotFoundError,
    PollTimeoutError,
    ValidationError,
)
from audiencekit.errors import BadRequestError, ConflictError
from audiencekit.options import PollPolicy
from audiencekit.providers.dexatel import CampaignStatus, DexatelClient
from audiencekit.testing import EmulatorServer, InstantClock

pytestmark = pytest.mark.anyio

BASE = "https://api.dexatel.com/v1"


@pytest.fixture
async def client(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[DexatelClient]:
    ends = emulators.endpoints
    async with DexatelClient(
        api_key=ends.dexatel_key,
        base_url=ends.dexatel_url,
        sleep=audiencekit_clock.sleep,
        clock=audiencekit_clock,
    ) as client:
        yield client


async def test_audience_endpoints(client: DexatelClient) -> None:
    created = await client.create_audience(
        "vip",
        "SMS",
        contacts=[{"number": "+37477000001", "first_name": "Ada"}, {"number": "37477000002"}],
    )
    assert created.contacts_count == 2
    assert created.channel is Channel.SMS
    assert created.create_date is not None
    assert created.create_date.tzinfo is not None
    assert set(created.links) == {"self", "account", "contacts"}
    await client.create_audience("viber", Channel.VIBER)
    only_viber = [a.name async for a in client.list_audiences(channel="VIBER")]
    assert only_viber == ["viber"]
    assert (await client.get_audience(created.id)).name == "vip"
    assert (await client.update_audience(created.id, name="vip2")).name == "vip2"
    await client.delete_audience(created.id)
    with pytest.raises(NotFoundError):
        await client.get_audience(created.id)


async def test_contact_endpoints(client: DexatelClient) -> None:
    audience = await client.create_audience("people", "SMS")
    ada = await client.create_contact(
        audience.id, "+374 77 000 001", first_name="Ada", timestamp="t1", custom2="d1"
    )
    assert ada.number == "+37477000001"
    assert (ada.custom1, ada.custom2) == ("t1", "d1")
    await client.create_contact(audience.id, "+37477000002", first_name="Bob")
    found = [c.number async for c in client.list_contacts(audience.id, search="bob")]
    assert found == ["+37477000002"]
    assert (await client.get_contact(audience.id, ada.id)).first_name == "Ada"
    updated = await client.update_contact(audience.id, ada.id, last_name="L", date="d2")
    assert (updated.last_name, updated.custom2) == ("L", "d2")
    with pytest.raises(ConflictError) as caught:
        await client.create_contact(audience.id, "+37477000001")
    assert caught.value.code == 1360
    await client.delete_contact(audience.id, ada.id)
    with pytest.raises(NotFoundError):
        await client.get_contact(audience.id, ada.id)


async def test_template_endpoints(client: DexatelClient) -> None:
    sms = await client.create_template(channel="SMS", name="hello", text="Hi {first_name}")
    assert sms.status == "COMPLETED"
    await client.create_template(channel="VIBER", name="v", text="x")
    assert [t.name async for t in client.list_templates(channel="VIBER")] == ["v"]
    assert [t.name async for t in client.list_templates(name="hello")] == ["hello"]
    assert len([t async for t in client.list_templates(status="COMPLETED")]) == 2
    assert (await client.get_template(sms.id)).text == "Hi {first_name}"
    assert (await client.update_template(sms.id, text="Bye")).text == "Bye"
    await client.delete_template(sms.id)
    with pytest.raises(NotFoundError):
        await client.get_template(sms.id)
    with pytest.raises(ValidationError):
        await client.create_template(channel="SMS", text="x" * 1001)


async def test_campaign_endpoints(client: DexatelClient, emulators: EmulatorServer) -> None:
    emulators.dexatel.config.campaign_duration = 0.0
    audience = await client.create_audience("target", "SMS", contacts=[{"number": "+37477000001"}])
    template = await client.create_template(channel="SMS", name="t", text="Hi")
    later = datetime.now(timezone.utc) + timedelta(days=2)
    campaign = await client.create_campaign(
        sender="Brand", audience_id=audience.id, template_id=template.id, schedule=later, name="c"
    )
    assert campaign.status is CampaignStatus.SCHEDULED
    assert campaign.schedule == later.replace(microsecond=0)
    assert [c.id async for c in client.list_campaigns(channel="SMS")] == [campaign.id]
    renamed = await client.update_campaign(campaign.id, name="c2")
    assert renamed.name == "c2"
    canceled = await client.cancel_campaign(campaign.id)
    assert canceled.status is CampaignStatus.CANCELED
    assert canceled.status.finished
    await client.delete_campaign(campaign.id)
    with pytest.raises(NotFoundError):
        await client.get_campaign(campaign.id)

    now = await client.create_campaign(
        sender="Brand", audience_id=audience.id, template_id=template.id
    )
    done = await client.wait_for_campaign(now.id, policy=PollPolicy(max_wait=30, interval=0.5))
    assert done.status is CampaignStatus.COMPLETED
    assert done.messages.total == 1


async def test_waiting_for_a_campaign_has_a_deadline(
    client: DexatelClient, emulators: EmulatorServer
) -> None:
    emulators.dexatel.config.campaign_duration = 3_600.0
    audience = await client.create_audience("slow", "SMS", contacts=[{"number": "+37477000001"}])
    template = await client.create_template(channel="SMS", name="t", text="Hi")
    campaign = await client.create_campaign(
        sender="Brand", audience_id=audience.id, template_id=template.id
    )
    with pytest.raises(PollTimeoutError) as caught:
        await client.wait_for_campaign(campaign.id, policy=PollPolicy(max_wait=5, interval=1))
    assert caught.value.handles == (campaign.id,)


async def test_bad_input_is_refused_before_sending(
    client: DexatelClient, emulators: EmulatorServer
) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        await client.create_campaign(
            sender="B", audience_id="a", template_id="t", schedule=datetime(2030, 1, 1)
        )
    with pytest.raises(ValidationError):
        await client.create_audience("x" * 46, "SMS")
    with pytest.raises(ValidationError):
        await client.create_audience("ok", "TELEGRAM")
    with pytest.raises(ValidationError):
        await client.create_audience("ok", "SMS", contacts=[{"number": "+1555"}] * 1001)
    with pytest.raises(ValidationError) as caught:
        await client.create_audience("ok", "SMS", contacts=[{"number": "nope"}])
    assert caught.value.ids == ("nope",)
    with pytest.raises(ValidationError):
        await client.get_audience("../templates")
    with pytest.raises(ValidationError):
        await client.update_campaign("c")
    assert emulators.dexatel.requests == []


@respx.mock
async def test_exact_bodies_sent() -> None:
    contact = {"id": "c1", "number": "+37477000001", "first_name": "Ada", "timestamp": "t"}
    post = respx.post(f"{BASE}/audiences/a1/contacts").mock(
        return_value=httpx.Response(201, json={"data": contact})
    )
    put = respx.put(f"{BASE}/campaigns/k1").mock(
        return_value=httpx.Response(200, json={"data": {"id": "k1", "status": "canceled"}})
    )
    campaign = respx.post(f"{BASE}/campaigns").mock(
        return_value=httpx.Response(201, json={"data": {"id": "k1", "status": "scheduled"}})
    )
    async with DexatelClient(api_key="secret-key") as client:
        made = await client.create_contact("a1", "+37477000001", first_name="Ada", custom1="t")
        await client.cancel_campaign("k1")
        await client.create_campaign(
            sender="Brand",
            audience_id="a1",
            template_id="t1",
            schedule=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=4))),
        )
    assert made.custom1 == "t"
    request = post.calls.last.request
    assert request.headers["x-dexatel-key"] == "secret-key"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "data": {"number": "+37477000001", "first_name": "Ada", "timestamp": "t"}
    }
    assert json.loads(put.calls.last.request.content) == {"data": {"status": "canceled"}}
    assert json.loads(campaign.calls.last.request.content) == {
        "data": {"from": "Brand", "audience": "a1", "template": "t1",
                 "schedule": "2030-01-01 23:04:05"}
    }  # fmt: skip


@respx.mock
async def test_next_links_as_query_strings_or_absolute_urls() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("page_token")
        links = {
            None: {"next": "?page_token=p2&page_size=2"},
            "p2": {"next": f"{BASE}/audiences?page_size=2&page_token=p3"},
            "p3": {"next": None},
        }[token]
        data = [{"id": f"{token}-{i}", "name": f"n{i}", "channel": "SMS"} for i in range(2)]
        return httpx.Response(200, json={"data": data, "pagination": {"links": links}})

    route = respx.get(f"{BASE}/audiences").mock(side_effect=page)
    async with DexatelClient(api_key="k") as client:
        ids = [a.id async for a in client.list_audiences(page_size=2)]
    assert ids == ["None-0", "None-1", "p2-0", "p2-1", "p3-0", "p3-1"]
    assert route.call_count == 3
    assert all(c.request.url.params["page_size"] == "2" for c in route.calls)


@respx.mock
async def test_error_envelopes_and_bodies_without_one() -> None:
    respx.get(f"{BASE}/audiences/a1").mock(
        return_value=httpx.Response(
            400,
            json={"errors": [{"code": 1301, "message": "Audience is not found", "status": 400}]},
        )
    )
    respx.get(f"{BASE}/audiences/a2").mock(
        return_value=httpx.Response(401, json={"message": "Unauthorized"})
    )
    respx.get(f"{BASE}/audiences/a3").mock(return_value=httpx.Response(422, text="nope"))
    respx.get(f"{BASE}/audiences/a4").mock(return_value=httpx.Response(200, json={"x": 1}))
    async with DexatelClient(api_key="k") as client:
        with pytest.raises(NotFoundError) as not_found:
            await client.get_audience("a1")
        assert (not_found.value.status, not_found.value.code) == (400, 1301)
        with pytest.raises(AuthenticationError, match="Unauthorized"):
            await client.get_audience("a2")
        with pytest.raises(BadRequestError, match="nope"):
            await client.get_audience("a3")
        with pytest.raises(APIError, match="without 'data'"):
            await client.get_audience("a4")
