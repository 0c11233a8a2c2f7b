"""The Batch emulator over real loopback HTTP: one test (or more) per point of the reference's
"What a faithful local emulator of Batch must do" (§12 of batch-reference.md).

Every response is validated against batch-openapi-excerpt.yaml, and so is every request the
``api`` client sends (``raw`` sends deliberately malformed ones, so only its answers are).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from audiencekit.testing import BatchConfig, EmulatorServer, Fault, FaultPlan

from ..openapi import SHARED_SPEC, SPEC_PATH, validate_request, validate_response

pytestmark = pytest.mark.anyio

Hook = Callable[[httpx.Response], Any]


def validating(check_requests: bool) -> Hook:
    async def hook(response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        if "/_emulator" in request.url.path:
            return
        if check_requests and request.method == "POST":
            validate_request(request.method, request.url.path, json.loads(request.content))
        validate_response(request.method, request.url.path, response.status_code, response.json())

    return hook


def client(server: EmulatorServer, *, check_requests: bool, **headers: str) -> httpx.AsyncClient:
    ends = server.endpoints
    base = {"Authorization": f"Bearer {ends.batch_key}", "X-Batch-Project": ends.batch_project}
    return httpx.AsyncClient(
        base_url=f"{ends.batch_url}/2.3",
        headers=base | headers,
        event_hooks={"response": [validating(check_requests)]},
    )


@pytest.fixture
async def api(audiencekit_emulators: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client(audiencekit_emulators, check_requests=True) as api:
        yield api


@pytest.fixture
async def raw(audiencekit_emulators: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client(audiencekit_emulators, check_requests=False) as raw:
        yield raw


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_message"}
    assert isinstance(body["error_code"], str)
    assert isinstance(body["error_message"], str)
    assert body["error_message"]
    return str(body["error_code"])


async def create(api: httpx.AsyncClient, name: str = "aud", **extra: Any) -> str:
    response = await api.post(
        "/audiences/create", json={"name": name, "type": "custom_ids"} | extra
    )
    assert response.status_code == 202, response.text
    return str(response.json()["indexing_token"])


async def update(api: httpx.AsyncClient, ids: list[dict[str, Any]], name: str = "aud") -> str:
    response = await api.post("/audiences/update", json={"name": name, "ids": ids})
    assert response.status_code == 202, response.text
    return str(response.json()["indexing_token"])


async def view(api: httpx.AsyncClient, name: str = "aud", token: str | None = None) -> Any:
    params = {"name": name} | ({"indexing_token": token} if token else {})
    response = await api.get("/audiences/view", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_vendored_spec_is_the_shared_one() -> None:
    if SHARED_SPEC.exists():
        assert SPEC_PATH.read_bytes() == SHARED_SPEC.read_bytes()


# 1. routes and versions ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.1", "2.3", "2.11"])
async def test_every_2x_version_is_served(
    audiencekit_emulators: EmulatorServer, version: str
) -> None:
    async with client(audiencekit_emulators, check_requests=True) as api:
        api.base_url = api.base_url.copy_with(path=f"/{version}")
        await create(api, f"v{version.replace('.', '_')}")
        listed = (await api.get("/audiences/list")).json()
        assert listed["count"] == 1


async def test_other_versions_and_methods_are_errors(raw: httpx.AsyncClient) -> None:
    assert_error(await raw.post(raw.base_url.copy_with(path="/1.0/audiences/create"), json={}), 404)
    assert_error(await raw.get(raw.base_url.copy_with(path="/3.0/audiences/list")), 404)
    assert_error(await raw.get("/audiences/update"), 405)
    assert_error(await raw.put("/audiences/create", json={}), 405)


# 2. auth and projects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic batch-emulator-rest-key"},
        {"Authorization": ""},
        {"X-Batch-Project": ""},
    ],
)
async def test_a_bad_key_or_project_is_401(
    audiencekit_emulators: EmulatorServer, headers: dict[str, str]
) -> None:
    async with client(audiencekit_emulators, check_requests=True, **headers) as api:
        response = await api.get("/audiences/list")
    assert assert_error(response, 401) == "AUTHENTICATION_INVALID"


async def test_audiences_are_kept_per_project(audiencekit_emulators: EmulatorServer) -> None:
    async with (
        client(audiencekit_emulators, check_requests=True) as a,
        client(
            audiencekit_emulators, check_requests=True, **{"X-Batch-Project": "project_other"}
        ) as b,
    ):
        await create(a, "only_in_a")
        assert (await a.get("/audiences/list")).json()["count"] == 1
        assert (await b.get("/audiences/list")).json()["count"] == 0
        assert_error(await b.get("/audiences/view", params={"name": "only_in_a"}), 404)


async def test_a_project_allow_list(audiencekit_emulators: EmulatorServer) -> None:
    audiencekit_emulators.batch.config.projects = frozenset({"project_emulator"})
    async with client(
        audiencekit_emulators, check_requests=True, **{"X-Batch-Project": "project_x"}
    ) as api:
        assert_error(await api.get("/audiences/list"), 401)


# 3./4. create --------------------------------------------------------------------------------


async def test_create(api: httpx.AsyncClient) -> None:
    token = await create(api, "Mixed-Case_1", display_name="The description")
    assert len(token) == 32
    int(token, 16)
    audience = await view(api, "Mixed-Case_1")
    assert audience["type"] == "CUSTOM_ID"
    assert audience["display_name"] == "The description"
    assert audience["nb_ids"] == 0
    assert audience["created"].endswith("Z")
    assert_error(await api.get("/audiences/view", params={"name": "mixed-case_1"}), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "custom_ids"},
        {"name": "", "type": "custom_ids"},
        {"name": "has space", "type": "custom_ids"},
        {"name": "x" * 256, "type": "custom_ids"},
        {"name": "ok"},
        {"name": "ok", "type": "install_ids"},
        {"name": "ok", "type": "custom_ids", "display_name": 5},
        ["not", "an", "object"],
    ],
)
async def test_create_validation(raw: httpx.AsyncClient, body: Any) -> None:
    assert_error(await raw.post("/audiences/create", json=body), 400)
    assert (await raw.get("/audiences/list")).json()["count"] == 0


async def test_create_an_existing_name_is_a_conflict(api: httpx.AsyncClient) -> None:
    await create(api)
    response = await api.post("/audiences/create", json={"name": "aud", "type": "custom_ids"})
    assert response.status_code == 409
    assert response.json()["error_code"] == "AUDIENCE_ALREADY_EXISTS"


async def test_non_json_bodies_are_400(raw: httpx.AsyncClient) -> None:
    assert_error(await raw.post("/audiences/create", content=b"{oops"), 400)
    assert_error(await raw.post("/audiences/update", content=b""), 400)


# 5. update -----------------------------------------------------------------------------------


async def test_update_last_action_per_id_wins(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    await create(api)
    await update(
        api,
        [
            {"action": "add", "id": "a", "attributes": {"n": 1}},
            {"action": "add", "id": "b"},
            {"action": "remove", "id": "a"},
            {"action": "add", "id": "c", "attributes": {"n": 1}},
            {"action": "add", "id": "c", "attributes": {"n": 2, "tags": ["x", "y"]}},
            {"action": "remove", "id": "b"},
            {"action": "add", "id": "b", "attributes": {
                "date(birth)": "2023-08-12T22:30:05Z", "url(avatar)": "https://e.com/a.png",
                "ok": True, "f": 1.5,
            }},
        ],
    )  # fmt: skip
    members = audiencekit_emulators.batch.members("aud")
    assert members == {
        "c": {"n": 2, "tags": ["x", "y"]},
        "b": {
            "date(birth)": "2023-08-12T22:30:05Z",
            "url(avatar)": "https://e.com/a.png",
            "ok": True,
            "f": 1.5,
        },
    }
    assert (await view(api))["nb_ids"] == 2


async def test_update_up_to_10000_ids(api: httpx.AsyncClient) -> None:
    await create(api)
    await update(api, [{"action": "add", "id": f"u{i}"} for i in range(10_000)])
    assert (await view(api))["nb_ids"] == 10_000


@pytest.mark.parametrize(
    "ids",
    [
        [],
        [{"action": "add", "id": f"u{i}"} for i in range(10_001)],
        [{"action": "add", "id": "a", "attributes": {f"k{i}": i for i in range(16)}}],
        [{"action": "replace", "id": "a"}],
        [{"action": "add"}],
        [{"action": "add", "id": ""}],
        [{"action": "add", "id": 42}],
        [{"action": "add", "id": "x" * 1025}],
        [{"action": "remove", "id": "a", "attributes": {"k": 1}}],
        [{"action": "add", "id": "a", "attributes": {"k": None}}],
        [{"action": "add", "id": "a", "attributes": {"k": {"nested": 1}}}],
        [{"action": "add", "id": "a", "attributes": {"k": [1, 2]}}],
        [{"action": "add", "id": "a", "attributes": {"date(d)": "yesterday"}}],
        [{"action": "add", "id": "a", "attributes": {"date(d)": "2023-08-12T22:30:05"}}],
        [{"action": "add", "id": "a", "attributes": {"url(u)": "not a url"}}],
        [{"action": "add", "id": "a", "attributes": {"bad name": 1}}],
        ["just-a-string"],
    ],
)
async def test_update_validation(raw: httpx.AsyncClient, ids: list[Any]) -> None:
    await create(raw)
    assert_error(await raw.post("/audiences/update", json={"name": "aud", "ids": ids}), 400)
    audience = (await raw.get("/audiences/view", params={"name": "aud"})).json()
    assert audience["nb_ids"] == 0


async def test_update_of_a_missing_audience(raw: httpx.AsyncClient) -> None:
    response = await raw.post(
        "/audiences/update", json={"name": "nope", "ids": [{"action": "add", "id": "a"}]}
    )
    assert response.status_code == 404
    assert response.json()["error_code"] == "AUDIENCE_NOT_FOUND"


# 6. replace ----------------------------------------------------------------------------------


async def test_replace_swaps_the_members_and_earlier_tokens_report_replaced(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    await create(api)
    first = await update(api, [{"action": "add", "id": "a"}, {"action": "add", "id": "b"}])
    response = await api.post(
        "/audiences/replace", json={"name": "aud", "ids": [{"id": "c", "attributes": {"k": "v"}}]}
    )
    assert response.status_code == 202
    replace_token = response.json()["indexing_token"]
    assert audiencekit_emulators.batch.members("aud") == {"c": {"k": "v"}}
    assert (await view(api, token=first))["indexing_state"] == "REPLACED"
    assert (await view(api, token=replace_token))["indexing_state"] == "APPLIED"


async def test_replace_overtakes_writes_still_pending(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audiencekit_emulators.batch.config.index_polls = 1
    await create(api)
    pending = await update(api, [{"action": "add", "id": "a"}])
    response = await api.post("/audiences/replace", json={"name": "aud", "ids": [{"id": "b"}]})
    replace_token = response.json()["indexing_token"]
    assert (await view(api, token=replace_token))["indexing_state"] == "APPLIED"
    assert (await view(api, token=pending))["indexing_state"] == "REPLACED"
    assert audiencekit_emulators.batch.members("aud") == {"b": {}}


@pytest.mark.parametrize("item", [{"id": "a"}, {"action": "upsert", "id": "a"}])
async def test_update_requires_an_action_on_every_item(
    raw: httpx.AsyncClient, item: dict[str, str]
) -> None:
    """The update page and the OpenAPI excerpt list ``action`` as required."""
    await create(raw)
    ids = [{"action": "add", "id": "ok"}, item]
    assert_error(await raw.post("/audiences/update", json={"name": "aud", "ids": ids}), 400)
    audience = (await raw.get("/audiences/view", params={"name": "aud"})).json()
    assert audience["nb_ids"] == 0  # nothing of a refused update is applied


async def test_replace_refuses_actions_and_too_many_ids(raw: httpx.AsyncClient) -> None:
    await create(raw)
    bad = {"name": "aud", "ids": [{"action": "add", "id": "a"}]}
    assert_error(await raw.post("/audiences/replace", json=bad), 400)
    many = {"name": "aud", "ids": [{"id": f"u{i}"} for i in range(10_001)]}
    assert_error(await raw.post("/audiences/replace", json=many), 400)


# 7. remove -----------------------------------------------------------------------------------


async def test_remove_deletes_the_audience(api: httpx.AsyncClient) -> None:
    await create(api)
    response = await api.post("/audiences/remove", json={"name": "aud"})
    assert response.status_code == 202
    assert response.json()["indexing_token"]
    assert_error(await api.get("/audiences/view", params={"name": "aud"}), 404)
    assert_error(await api.post("/audiences/remove", json={"name": "aud"}), 404)


# 8. view -------------------------------------------------------------------------------------


async def test_view_needs_a_name_and_knows_its_tokens(
    api: httpx.AsyncClient, raw: httpx.AsyncClient
) -> None:
    token = await create(api)
    assert (await view(api, token=token))["indexing_state"] == "APPLIED"
    assert_error(await raw.get("/audiences/view"), 400)
    assert_error(await raw.get("/audiences/view", params={"name": "ghost"}), 404)
    assert_error(
        await raw.get("/audiences/view", params={"name": "aud", "indexing_token": "x"}), 404
    )


# 9. list -------------------------------------------------------------------------------------


async def test_list_pages_with_an_opaque_cursor(
    api: httpx.AsyncClient, raw: httpx.AsyncClient
) -> None:
    for i in range(25):
        await create(api, f"a{i:02d}")
    first = (await api.get("/audiences/list")).json()
    assert len(first["audiences"]) == 10  # default limit
    assert first["count"] == 25
    assert first["has_more"] is True
    assert first["audiences"][0]["name"] == "a24"  # newest first (assumed)
    names = [a["name"] for a in first["audiences"]]
    cursor = first["next_from"]
    while cursor:
        page = (await api.get("/audiences/list", params={"from": cursor, "limit": 10})).json()
        assert "count" not in page
        names += [a["name"] for a in page["audiences"]]
        cursor = page.get("next_from")
    assert sorted(names) == [f"a{i:02d}" for i in range(25)]
    assert page["has_more"] is False
    full = (await api.get("/audiences/list", params={"limit": 100})).json()
    assert len(full["audiences"]) == 25
    assert_error(await raw.get("/audiences/list", params={"limit": 101}), 400)
    assert_error(await raw.get("/audiences/list", params={"limit": 0}), 400)
    assert_error(await raw.get("/audiences/list", params={"from": "%%%"}), 400)


# 10. asynchronous indexing -------------------------------------------------------------------


async def test_writes_apply_only_after_the_configured_polls(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audiencekit_emulators.batch.config.index_polls = 3
    await create(api)
    token = await update(api, [{"action": "add", "id": "a"}, {"action": "add", "id": "b"}])
    states = [(await view(api, token=token)) for _ in range(3)]
    assert [s["indexing_state"] for s in states] == ["IN_PROGRESS", "IN_PROGRESS", "APPLIED"]
    assert [s["nb_ids"] for s in states] == [0, 0, 2]
    assert (await view(api))["indexing_state"] == "APPLIED"


async def test_writes_apply_after_the_configured_delay(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    import anyio

    audiencekit_emulators.batch.config.index_delay = 0.2
    await create(api)
    token = await update(api, [{"action": "add", "id": "a"}])
    assert (await view(api, token=token))["indexing_state"] == "IN_PROGRESS"
    assert (await view(api))["indexing_state"] == "IN_PROGRESS"
    assert audiencekit_emulators.batch.members("aud") == {}
    await anyio.sleep(0.25)
    assert (await view(api, token=token))["indexing_state"] == "APPLIED"
    assert audiencekit_emulators.batch.members("aud") == {"a": {}}


async def test_in_process_is_emitted_only_when_asked(
    audiencekit_emulators: EmulatorServer, api: httpx.AsyncClient
) -> None:
    config = audiencekit_emulators.batch.config
    config.index_polls = 5
    await create(api)
    assert (await view(api))["indexing_state"] == "IN_PROGRESS"
    config.emit_in_process = True
    # "IN_PROCESS" is the update page's word, not in the spec's enum: read it unvalidated
    async with httpx.AsyncClient(base_url=api.base_url, headers=api.headers) as plain:
        response = await plain.get("/audiences/view", params={"name": "aud"})
    assert response.json()["indexing_state"] == "IN_PROCESS"


# 11. rate limit ------------------------------------------------------------------------------


async def test_the_rate_limit_answers_429(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    config = audiencekit_emulators.batch.config
    config.rate_limit = 1.0
    config.rate_burst = 2
    statuses = [(await api.get("/audiences/list")).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    config.retry_after_header = True
    limited = await api.get("/audiences/list")
    assert assert_error(limited, 429) == "TOO_MANY_REQUESTS"
    assert 0 < float(limited.headers["retry-after"]) <= 1.0


# 12. 500 / 503 on demand -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_on_demand(
    api: httpx.AsyncClient, audiencekit_emulators: EmulatorServer, status: int
) -> None:
    audiencekit_emulators.batch.set_faults(
        FaultPlan([Fault.http_status(status, "GET */audiences/list", calls=[1])])
    )
    assert_error(await api.get("/audiences/list"), status)
    assert (await api.get("/audiences/list")).status_code == 200


async def test_the_default_config_is_documented_and_off_where_unverified() -> None:
    config = BatchConfig()
    assert config.rate_limit is None
    assert config.index_polls == 0
    assert config.emit_in_process is False
