"""Async auto-pagination over respx: one request a page, stops at the end, never loops."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import respx

from audiencekit import AsyncPager, Page, PaginationError

pytestmark = pytest.mark.anyio

URL = "https://pages.test/items"


def serve(
    items: list[str], *, repeat_at: int | None = None, last_link: object = None
) -> respx.Route:
    """A list endpoint with page tokens; ``repeat_at`` makes that page hand back an old token."""

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("page_token")
        size = int(request.url.params["page_size"])
        start = int(token[1:]) if token else 0
        nxt = start + size
        next_token: object = f"p{nxt}" if nxt < len(items) else last_link
        if repeat_at is not None and start == repeat_at:
            next_token = "p10"
        return httpx.Response(200, json={"data": items[start:nxt], "next": next_token})

    return respx.get(URL).mock(side_effect=handler)


def pager(client: httpx.AsyncClient, size: int) -> AsyncPager[str]:
    async def fetch(token: str | None) -> Page[str]:
        params = {"page_size": str(size)} | ({"page_token": token} if token else {})
        body = (await client.get(URL, params=params)).json()
        return Page(body["data"], next_token=body["next"])

    return AsyncPager(fetch, provider="test", what="items")


@pytest.mark.parametrize("n", [0, 1, 5])
@respx.mock
async def test_page_size_one_makes_one_request_per_item(n: int) -> None:
    items = [f"i{k}" for k in range(n)]
    route = serve(items)
    async with httpx.AsyncClient() as client:
        seen = [item async for item in pager(client, 1)]
    assert seen == items
    assert route.call_count == max(n, 1)
    tokens = [parse_qs(urlparse(str(c.request.url)).query).get("page_token") for c in route.calls]
    assert tokens == [None] + [[f"p{k}"] for k in range(1, n)]


@pytest.mark.parametrize("last_link", [None, ""])
@respx.mock
async def test_stops_on_a_missing_or_empty_next_token(last_link: object) -> None:
    route = serve([str(k) for k in range(25)], last_link=last_link)
    async with httpx.AsyncClient() as client:
        pages = [page async for page in pager(client, 10).pages()]
    assert [len(page.items) for page in pages] == [10, 10, 5]
    assert route.call_count == 3


@respx.mock
async def test_a_repeated_token_raises_instead_of_looping() -> None:
    route = serve([str(k) for k in range(50)], repeat_at=20)
    async with httpx.AsyncClient() as client:
        seen: list[str] = []

        async def drain() -> None:
            async for item in pager(client, 10):
                seen.append(item)

        with pytest.raises(PaginationError, match="'p10' twice"):
            await drain()
    assert seen == [str(k) for k in range(20)]
    assert route.call_count == 3


@respx.mock
async def test_a_token_pointing_at_itself_raises() -> None:
    async def fetch(token: str | None) -> Page[int]:
        return Page([1], next_token="same")

    with pytest.raises(PaginationError):
        [item async for item in AsyncPager(fetch, provider="test")]


@respx.mock
async def test_each_iteration_starts_from_the_first_page() -> None:
    route = serve(["a", "b", "c"])
    async with httpx.AsyncClient() as client:
        items = pager(client, 2)
        first = [x async for x in items]
        second = [x async for x in items]
    assert first == second == ["a", "b", "c"]
    assert route.call_count == 4
