"""BatchClient's exact requests (respx) and its paging (emulator)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from audiencekit import Member
from audiencekit.errors import UnexpectedResponseError
from audiencekit.options import PollPolicy
from audiencekit.providers.batch import BatchBackend, BatchClient, IndexingState
from audiencekit.testing import InstantClock

from .conftest import MakeBackend

pytestmark = pytest.mark.anyio

BASE = "https://api.batch.com/2.3"


@respx.mock
async def test_headers_bodies_and_the_in_process_spelling() -> None:
    update = respx.post(f"{BASE}/audiences/update").mock(
        return_value=httpx.Response(202, json={"indexing_token": "tok1"})
    )
    view = respx.get(f"{BASE}/audiences/view").mock(
        side_effect=[
            httpx.Response(200, json={"name": "a", "indexing_state": "IN_PROCESS", "nb_ids": 0}),
            httpx.Response(200, json={"name": "a", "indexing_state": "APPLIED", "nb_ids": 1,
                                      "created": "2023-08-12T22:30:05Z", "new_field": 7}),
        ]
    )  # fmt: skip
    clock = InstantClock()
    async with BatchBackend(
        api_key="rest-key",
        project_key="project_x",
        sleep=clock.sleep,
        clock=clock,
        poll=PollPolicy(max_wait=10, interval=1),
    ) as backend:
        result = await backend.add_members("a", [Member("u1", attributes={"k": "v"})])

    request = update.calls.last.request
    assert request.headers["authorization"] == "Bearer rest-key"
    assert request.headers["x-batch-project"] == "project_x"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "name": "a",
        "ids": [{"action": "add", "id": "u1", "attributes": {"k": "v"}}],
    }
    assert [c.request.url.params["indexing_token"] for c in view.calls] == ["tok1", "tok1"]
    assert result.polls == 2
    assert result.handles == ("tok1",)


@respx.mock
async def test_unexpected_answers_are_unexpected_response_errors() -> None:
    respx.post(f"{BASE}/audiences/update").mock(return_value=httpx.Response(202, json={}))
    respx.get(f"{BASE}/audiences/view").mock(return_value=httpx.Response(200, text="<html>"))
    async with BatchClient(api_key="k", project_key="p") as client:
        with pytest.raises(UnexpectedResponseError, match="202 but no indexing token"):
            await client.update("a", [{"action": "add", "id": "x"}])
        with pytest.raises(UnexpectedResponseError, match="not JSON"):
            await client.view("a")


async def test_list_pages_with_the_cursor(make_backend: MakeBackend) -> None:
    backend = make_backend()
    for i in range(5):
        await backend.create_audience(f"aud{i}")
    client = backend.client
    pages = [page async for page in client.list(limit=2).pages()]
    assert [len(page.items) for page in pages] == [2, 2, 1]
    assert pages[0].total == 5
    assert {a.name for page in pages for a in page.items} == {f"aud{i}" for i in range(5)}
    assert all(a.indexing_state is IndexingState.APPLIED for a in pages[0].items)
    listed = [a async for a in backend.list_audiences()]
    assert {a.id for a in listed} == {f"aud{i}" for i in range(5)}
    assert listed[0].extra["type"] == "CUSTOM_ID"
