"""The Dexatel emulator over real loopback HTTP: one test (or more) per point of the reference's
"What a faithful local emulator of Dexatel must do" (§9 of dexatel-reference.md)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from audiencekit.testing import DexatelConfig, EmulatorServer

pytestmark = pytest.mark.anyio

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
SMS = {"name": "sms-tpl", "text": "Hi {first_name}", "channel": "SMS"}


@pytest.fixture
async def api(audiencekit_emulators: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    ends = audiencekit_emulators.endpoints
    async with httpx.AsyncClient(
        base_url=ends.dexatel_url, headers={"X-Dexatel-Key": ends.dexatel_key}
    ) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: int | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["errors"]
    (error,) = body["errors"]
    assert set(error) == {"timestamp", "path", "method", "status", "message", "code"}
    assert error["status"] == status
    assert error["code"] == code
    assert error["path"] == response.request.url.path
    assert error["method"] == response.request.method
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


async def new_audience(api: httpx.AsyncClient, name: str = "vip", **data: Any) -> dict[str, Any]:
    response = await api.post("/audiences", json={"data": {"name": name, "channel": "SMS"} | data})
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


# 1. auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Dexatel-Key": "wrong"}, {"X-Dexatel-Key": ""}])
async def test_a_missing_or_unknown_key_is_401(
    audiencekit_emulators: EmulatorServer, headers: dict[str, str]
) -> None:
    url = audiencekit_emulators.endpoints.dexatel_url
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        response = await client.get("/audiences")
    assert_error(response, 401, DexatelConfig().auth_error_code)


# 2. the error envelope, and 3. body checks ---------------------------------------------------


async def test_bad_json_is_1005_and_a_missing_data_field_is_1007(api: httpx.AsyncClient) -> None:
    assert_error(await api.post("/audiences", content=b"{not json"), 400, 1005)
    assert_error(await api.post("/audiences", content=b""), 400, 1005)
    assert_error(await api.post("/audiences", json={"name": "x"}), 400, 1007)
    assert_error(await api.post("/templates", json={"text": "x"}), 400, 1253)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("PATCH", "/audiences"), ("POST", "/audiences/x/contacts/y")],
)
async def test_unknown_routes_and_methods_get_the_envelope_not_a_traceback(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path, json={"data": {}})
    assert response.status_code in (404, 405)
    assert_error(response, response.status_code, None)
    assert "Traceback" not in response.text


# 4. audiences --------------------------------------------------------------------------------


async def test_audience_crud(api: httpx.AsyncClient) -> None:
    created = await new_audience(api)
    assert uuid.UUID(created["id"]).version == 4
    assert created["contacts_count"] == 0
    assert set(created["links"]) == {"self", "account", "contacts"}
    assert DATE_RE.match(created["create_date"])

    fetched = (await api.get(f"/audiences/{created['id']}")).json()["data"]
    assert fetched == created

    renamed = await api.put(f"/audiences/{created['id']}", json={"data": {"name": "vip2"}})
    assert renamed.status_code == 200
    assert renamed.json()["data"]["name"] == "vip2"

    deleted = await api.delete(f"/audiences/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(await api.get(f"/audiences/{created['id']}"), 404, 1301)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"channel": "SMS"}, 1303),
        ({"name": "has space", "channel": "SMS"}, 1304),
        ({"name": "x" * 46, "channel": "SMS"}, 1305),
        ({"name": "ok"}, 1306),
        ({"name": "ok", "channel": "TELEGRAM"}, 1307),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "1555000"}] * 1001}, 1308),
        ({"name": "ok", "channel": "SMS", "contacts": [{"first_name": "A"}]}, 1353),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "not-a-number"}]}, 1354),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "1" * 46}]}, 1354),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "15550000001",
                                                       "first_name": "a" * 33}]}, 1361),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "15550000001",
                                                       "last_name": "a" * 33}]}, 1362),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "15550000001",
                                                       "custom1": "a" * 33}]}, 1363),
        ({"name": "ok", "channel": "SMS", "contacts": [{"number": "15550000001",
                                                       "date": "a" * 71}]}, 1364),
    ],
)  # fmt: skip
async def test_audience_create_validation(
    api: httpx.AsyncClient, data: dict[str, Any], code: int
) -> None:
    assert_error(await api.post("/audiences", json={"data": data}), 400, code)
    assert (await api.get("/audiences")).json()["data"] == []


async def test_create_with_up_to_1000_initial_contacts(api: httpx.AsyncClient) -> None:
    contacts = [{"number": f"+1555{i:07d}", "first_name": f"n{i}"} for i in range(1000)]
    created = await new_audience(api, contacts=contacts)
    assert created["contacts_count"] == 1000


async def test_a_duplicate_audience_name_is_409_1309(api: httpx.AsyncClient) -> None:
    first = await new_audience(api, "dup")
    other = await new_audience(api, "other")
    assert_error(
        await api.post("/audiences", json={"data": {"name": "dup", "channel": "VIBER"}}), 409, 1309
    )
    assert_error(
        await api.put(f"/audiences/{other['id']}", json={"data": {"name": "dup"}}), 409, 1309
    )
    assert first["name"] == "dup"


async def test_unknown_and_malformed_audience_ids(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/audiences/{uuid.uuid4()}"), 404, 1301)
    assert_error(await api.get("/audiences/not-a-uuid"), 400, 1302)
    assert_error(await api.delete("/audiences/not-a-uuid"), 400, 1302)


async def test_list_filters_by_channel(api: httpx.AsyncClient) -> None:
    await new_audience(api, "a")
    await api.post("/audiences", json={"data": {"name": "b", "channel": "VIBER"}})
    names = [a["name"] for a in (await api.get("/audiences?filter[channel]=Viber")).json()["data"]]
    assert names == ["b"]
    listed = (await api.get("/audiences")).json()["data"]
    assert "contacts_count" not in listed[0]  # the list form has no count (as documented)


# 5. contacts ---------------------------------------------------------------------------------


async def test_contact_crud_and_the_audience_count(api: httpx.AsyncClient) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    created = await api.post(
        base, json={"data": {"number": "+37477000001", "first_name": "Ada", "timestamp": "t1"}}
    )
    assert created.status_code == 201
    contact = created.json()["data"]
    assert contact["audience_id"] == audience["id"]
    assert contact["timestamp"] == "t1"
    assert set(contact["links"]) == {"self", "account", "audience"}

    fetched = (await api.get(f"{base}/{contact['id']}")).json()["data"]
    assert fetched == contact
    updated = await api.put(f"{base}/{contact['id']}", json={"data": {"last_name": "L"}})
    assert updated.json()["data"]["last_name"] == "L"
    assert updated.json()["data"]["first_name"] == "Ada"
    count = (await api.get(f"/audiences/{audience['id']}")).json()["data"]["contacts_count"]
    assert count == 1

    assert (await api.delete(f"{base}/{contact['id']}")).status_code == 204
    assert_error(await api.get(f"{base}/{contact['id']}"), 404, 1351)
    assert_error(await api.get(f"{base}/nope"), 400, 1352)
    count = (await api.get(f"/audiences/{audience['id']}")).json()["data"]["contacts_count"]
    assert count == 0


@pytest.mark.parametrize("body", [{}, {"data": None}, {"data": {}}])
async def test_a_contact_update_without_data_is_accepted_and_changes_nothing(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer, body: dict[str, Any]
) -> None:
    """The Contacts: Update page lists ``data`` as optional."""
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    data = {"number": "+37477000001", "first_name": "Ada", "timestamp": "t1"}
    contact = (await api.post(base, json={"data": data})).json()["data"]

    updated = await api.put(f"{base}/{contact['id']}", json=body)

    assert updated.status_code == 200, updated.text
    answered = updated.json()["data"]
    stored = (await api.get(f"{base}/{contact['id']}")).json()["data"]
    fields = ("id", "number", "first_name", "last_name", "timestamp", "date")
    assert {k: answered[k] for k in fields} == {k: contact[k] for k in fields}
    assert {k: stored[k] for k in fields} == {k: contact[k] for k in fields}
    assert audiencekit_emulators.dexatel.requests[-2].body == body  # the PUT, as sent


async def test_search_matches_numbers_and_names(api: httpx.AsyncClient) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    for number, first in [("+37477000001", "Ada"), ("+37477000002", "Bob"), ("+1555000", "ada")]:
        await api.post(base, json={"data": {"number": number, "first_name": first}})
    numbers = lambda r: sorted(c["number"] for c in r.json()["data"])  # noqa: E731
    assert numbers(await api.get(base, params={"filter[search]": "ada"})) == [
        "+1555000",
        "+37477000001",
    ]
    assert numbers(await api.get(base, params={"filter[search]": "000002"})) == ["+37477000002"]


async def test_the_number_cannot_change_and_must_be_unique(api: httpx.AsyncClient) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    contact = (await api.post(base, json={"data": {"number": "+37477000001"}})).json()["data"]
    assert_error(await api.post(base, json={"data": {"number": "+37477000001"}}), 409, 1360)
    assert_error(await api.post(base, json={"data": {"number": "37477000001"}}), 409, 1360)
    assert_error(
        await api.put(f"{base}/{contact['id']}", json={"data": {"number": "+1555000"}}), 400, 1354
    )


async def test_both_custom_field_spellings_are_accepted(api: httpx.AsyncClient) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    data = {"number": "+37477000001", "custom1": "c1", "custom2": "c2"}
    contact = (await api.post(base, json={"data": data})).json()["data"]
    assert (contact["timestamp"], contact["date"]) == ("c1", "c2")


async def test_deleting_an_audience_removes_its_contacts(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audience = await new_audience(api, contacts=[{"number": "+37477000001"}])
    await api.delete(f"/audiences/{audience['id']}")
    state = (await api.get(api.base_url.copy_with(path="/_emulator/state"))).json()
    assert state["account"]["audiences"] == []
    assert_error(await api.get(f"/audiences/{audience['id']}/contacts"), 404, 1301)


async def test_array_bodies_are_off_by_default_and_switchable(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    many = {"data": [{"number": "+37477000001"}, {"number": "+37477000002"}]}
    assert_error(await api.post(base, json=many), 400, 1007)
    audiencekit_emulators.dexatel.config.bulk_contacts = True
    created = await api.post(base, json=many)
    assert created.status_code == 201
    assert len(created.json()["data"]) == 2


# 6. templates --------------------------------------------------------------------------------


async def test_template_crud_filters_and_rules(api: httpx.AsyncClient) -> None:
    created = await api.post("/templates", json={"data": SMS})
    assert created.status_code == 201
    template = created.json()["data"]
    assert template["status"] == "COMPLETED"
    viber = {"name": "v", "text": "x", "channel": "VIBER"}
    await api.post("/templates", json={"data": viber})

    def names(r: httpx.Response) -> list[str]:
        return [t["name"] for t in r.json()["data"]]

    assert names(await api.get("/templates", params={"filter[channel]": "VIBER"})) == ["v"]
    assert names(await api.get("/templates", params={"filter[name]": "sms-tpl"})) == ["sms-tpl"]
    assert len(names(await api.get("/templates", params={"filter[status]": "COMPLETED"}))) == 2

    assert_error(await api.post("/templates", json={"data": SMS}), 409, 1258)
    assert_error(
        await api.post("/templates", json={"data": SMS | {"name": "n", "text": "x" * 1001}}),
        400,
        1260,
    )
    assert_error(await api.post("/templates", json={"data": SMS | {"name": "n" * 46}}), 400, 1263)
    assert_error(await api.post("/templates", json={"data": {"text": "x"}}), 400, 1256)
    assert_error(
        await api.post("/templates", json={"data": {"text": "x", "channel": "FAX"}}), 400, 1257
    )
    assert_error(
        await api.post("/templates", json={"data": {"name": "n", "channel": "SMS"}}), 400, 1254
    )

    tid = template["id"]
    updated = await api.put(f"/templates/{tid}", json={"data": {"text": "new"}})
    assert updated.json()["data"]["text"] == "new"
    assert (await api.delete(f"/templates/{tid}")).status_code == 204
    assert_error(await api.get(f"/templates/{tid}"), 404, 1251)


# 7. campaigns --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(audiencekit_emulators: EmulatorServer) -> Clock:
    clock = Clock()
    audiencekit_emulators.dexatel.config.now = clock
    audiencekit_emulators.dexatel.config.campaign_duration = 60.0
    return clock


async def campaign_parts(api: httpx.AsyncClient) -> dict[str, str]:
    audience = await new_audience(
        api, contacts=[{"number": "+37477000001"}, {"number": "+37477000002"}]
    )
    template = (await api.post("/templates", json={"data": SMS})).json()["data"]
    return {"from": "Sender", "audience": audience["id"], "template": template["id"]}


async def test_campaign_lifecycle(api: httpx.AsyncClient, clock: Clock) -> None:
    parts = await campaign_parts(api)
    when = (clock.now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    created = await api.post("/campaigns", json={"data": parts | {"name": "c", "schedule": when}})
    assert created.status_code == 201
    campaign = created.json()["data"]
    assert campaign["status"] == "scheduled"
    assert campaign["schedule"] == when
    assert campaign["channel"] == "SMS"
    assert (campaign["audience_id"], campaign["template_id"]) == (
        parts["audience"],
        parts["template"],
    )
    cid = campaign["id"]

    renamed = await api.put(f"/campaigns/{cid}", json={"data": {"name": "c2"}})
    assert renamed.json()["data"]["name"] == "c2"

    clock.now += timedelta(hours=1, seconds=1)
    running = (await api.get(f"/campaigns/{cid}")).json()["data"]
    assert running["status"] == "in_progress"
    assert_error(await api.put(f"/campaigns/{cid}", json={"data": {"name": "late"}}), 400, 1611)
    assert_error(await api.delete(f"/campaigns/{cid}"), 400, 1612)

    clock.now += timedelta(minutes=2)
    done = (await api.get(f"/campaigns/{cid}")).json()["data"]
    assert done["status"] == "completed"
    assert done["messages"] == {"total": 2, "delivered": 2, "failed": 0}
    assert (await api.delete(f"/campaigns/{cid}")).status_code == 204


async def test_campaign_cancel(api: httpx.AsyncClient, clock: Clock) -> None:
    parts = await campaign_parts(api)
    when = (clock.now + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    cid = (await api.post("/campaigns", json={"data": parts | {"schedule": when}})).json()["data"][
        "id"
    ]
    assert_error(
        await api.put(f"/campaigns/{cid}", json={"data": {"status": "completed"}}), 400, 1611
    )
    canceled = await api.put(f"/campaigns/{cid}", json={"data": {"status": "canceled"}})
    assert canceled.json()["data"]["status"] == "canceled"
    assert_error(
        await api.put(f"/campaigns/{cid}", json={"data": {"status": "canceled"}}), 400, 1611
    )


async def test_a_refused_campaign_update_changes_nothing(
    api: httpx.AsyncClient, clock: Clock
) -> None:
    # The campaign pages list 1522 "Schedule date should be after current date" as an error:
    # the request fails, so neither the name nor the schedule it carried is applied.
    parts = await campaign_parts(api)
    when = (clock.now + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    created = await api.post("/campaigns", json={"data": parts | {"name": "c", "schedule": when}})
    cid = created.json()["data"]["id"]
    past = (clock.now - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    for data in ({"name": "renamed", "schedule": past}, {"status": "canceled", "schedule": past}):
        assert_error(await api.put(f"/campaigns/{cid}", json={"data": data}), 400, 1522)
        held = (await api.get(f"/campaigns/{cid}")).json()["data"]
        assert (held["name"], held["schedule"], held["status"]) == ("c", when, "scheduled")


async def test_numbers_are_stored_as_sent_or_as_configured(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audience = await new_audience(api)
    base = f"/audiences/{audience['id']}/contacts"
    stored = {}
    for storage, number in (("as_sent", "37477000001"), ("digits", "+37477000002"),
                            ("plus", "37477000003")):  # fmt: skip
        audiencekit_emulators.dexatel.config.number_storage = storage
        created = await api.post(base, json={"data": {"number": number}})
        stored[storage] = created.json()["data"]["number"]
    assert stored == {"as_sent": "37477000001", "digits": "37477000002", "plus": "+37477000003"}
    # Either spelling is one contact (numbers_match_ignoring_plus), and a search for the digits
    # finds it whichever way it is stored.
    assert_error(await api.post(base, json={"data": {"number": "+37477000001"}}), 409, 1360)
    found = await api.get(base, params={"filter[search]": "3747700000"})
    assert sorted(c["number"] for c in found.json()["data"]) == sorted(stored.values())


async def test_campaign_create_validation(
    api: httpx.AsyncClient, clock: Clock, audiencekit_emulators: EmulatorServer
) -> None:
    parts = await campaign_parts(api)
    for key, code in (("from", 1603), ("audience", 1605), ("template", 1607)):
        missing = {k: v for k, v in parts.items() if k != key}
        assert_error(await api.post("/campaigns", json={"data": missing}), 400, code)
    assert_error(
        await api.post("/campaigns", json={"data": parts | {"audience": str(uuid.uuid4())}}),
        400,
        1606,
    )
    assert_error(
        await api.post("/campaigns", json={"data": parts | {"template": str(uuid.uuid4())}}),
        400,
        1608,
    )
    viber = (
        await api.post("/templates", json={"data": {"name": "v", "text": "x", "channel": "VIBER"}})
    ).json()["data"]
    assert_error(
        await api.post("/campaigns", json={"data": parts | {"template": viber["id"]}}), 400, 1613
    )
    past = (clock.now - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert_error(await api.post("/campaigns", json={"data": parts | {"schedule": past}}), 400, 1522)
    assert_error(
        await api.post("/campaigns", json={"data": parts | {"schedule": "tomorrow"}}), 400, 1609
    )
    audiencekit_emulators.dexatel.config.max_campaign_audience = 1
    assert_error(await api.post("/campaigns", json={"data": parts}), 400, 1606)
    assert_error(await api.get(f"/campaigns/{uuid.uuid4()}"), 404, 1601)
    assert_error(await api.get("/campaigns/x"), 400, 1602)


# 8. lists ------------------------------------------------------------------------------------


async def test_pagination_links_carry_the_next_page_token(api: httpx.AsyncClient) -> None:
    audience = await new_audience(api, contacts=[{"number": f"+1555{i:07d}"} for i in range(25)])
    base = f"/audiences/{audience['id']}/contacts"
    seen: list[str] = []
    params: dict[str, str] = {"page_size": "10"}
    pages = 0
    while True:
        body = (await api.get(base, params=params)).json()
        pages += 1
        pagination = body["pagination"]
        assert set(pagination) == {"number", "size", "total", "links"}
        assert pagination["total"] == 25
        assert pagination["number"] == pages
        assert pagination["size"] == len(body["data"])
        assert set(pagination["links"]) == {"first", "current", "previous", "next"}
        seen += [c["number"] for c in body["data"]]
        nxt = pagination["links"]["next"]
        if not nxt:
            break
        assert re.match(r"^\?page_token=[^&]+&page_size=10$", nxt)
        token = httpx.URL(nxt).params["page_token"]
        params = {"page_token": token, "page_size": "10"}
    assert pages == 3
    assert seen == [f"+1555{i:07d}" for i in range(25)]


async def test_page_size_is_capped_and_tokens_are_checked(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audiencekit_emulators.dexatel.config.max_page_size = 5
    await new_audience(api, contacts=[{"number": f"+1555{i:07d}"} for i in range(8)])
    for i in range(7):
        await new_audience(api, f"a{i}")
    body = (await api.get("/audiences", params={"page_size": "100"})).json()
    assert len(body["data"]) == 5
    assert_error(await api.get("/audiences", params={"page_token": "garbage!"}), 400, 1005)
    assert_error(await api.get("/audiences", params={"page_size": "many"}), 400, 1005)


# 9. dates, 10. ids, 11. statuses ---------------------------------------------------------------


async def test_update_date_changes_on_put(api: httpx.AsyncClient, clock: Clock) -> None:
    created = await new_audience(api)
    clock.now += timedelta(minutes=5)
    updated = (
        await api.put(f"/audiences/{created['id']}", json={"data": {"name": "vip9"}})
    ).json()["data"]
    assert created["update_date"] == "2026-11-23 12:00:00"
    assert updated["update_date"] == "2026-11-23 12:05:00"
    assert updated["create_date"] == created["create_date"]


# 12. faults ----------------------------------------------------------------------------------
# (tests/emulators/test_faults.py drives every kind of fault against both emulators)
