"""Async auto-pagination over respx: one request a page, stops at the end, never loops."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TypeVar
from urllib.parse import parse_qs, urlparse

import anyio
import httpx
import pytest
import respx

from audiencekit.errors import PaginationError
from audiencekit.pages import AsyncPager, Page

pytestmark = pytest.mark.anyio

T = TypeVar("T")

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


def endless(*, items: int, total: int | None) -> AsyncPager[int]:
    """A server that hands out a fresh token on every page, forever."""
    pages = 0

    async def fetch(token: str | None) -> Page[int]:
        nonlocal pages
        pages += 1
        return Page(list(range(items)), next_token=f"t{pages}", total=total)

    return AsyncPager(fetch, provider="test", what="items")


async def count_until_stopped(pager: AsyncPager[int]) -> int:
    """How many pages the listing yielded before it raised PaginationError."""
    pages = 0
    try:
        async for _ in pager.pages():
            pages += 1
    except PaginationError:
        return pages
    raise AssertionError("the listing ended without PaginationError")


async def test_fresh_tokens_past_the_providers_own_total_stop() -> None:
    # 250 items at 100 a page is 3 pages; twice that plus 10 is the most a listing may read.
    assert await count_until_stopped(endless(items=100, total=250)) == 16


async def test_fresh_tokens_on_empty_pages_stop_after_a_hundred() -> None:
    assert await count_until_stopped(endless(items=0, total=None)) == 99


async def test_max_pages_bounds_a_listing_without_totals() -> None:
    pager = endless(items=3, total=None)
    pager.max_pages = 40
    assert await count_until_stopped(pager) == 40
    assert pager.map(str).max_pages == 40  # a mapped pager keeps the bound


async def test_a_total_that_grows_while_listing_is_not_a_loop() -> None:
    calls = 0

    async def fetch(token: str | None) -> Page[int]:
        nonlocal calls
        calls += 1  # 100 items a page; the audience grows by 100 a page, up to 5,000 items
        return Page(list(range(100)), next_token=None if calls == 50 else f"t{calls}",
                    total=min(5_000, 200 + 100 * calls))  # fmt: skip

    items = [i async for i in AsyncPager(fetch, provider="test")]
    assert len(items) == 5_000


async def test_dexatel_listing_that_never_ends_raises_pagination_error() -> None:
    from audiencekit.providers.dexatel import DexatelClient

    served = 0

    def respond(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        return httpx.Response(200, json={
            "data": [{"id": f"a{served}", "name": "x", "channel": "SMS"}],
            "pagination": {"total": 3, "links": {"next": f"?page_token=fresh{served}"}},
        })  # fmt: skip

    client = DexatelClient(
        api_key="k" * 12,
        base_url="https://dexatel.test/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(respond)),
        rate_limit=None,
    )
    async with client:
        with pytest.raises(PaginationError, match="own total of 3"):
            async for _ in client.list_audiences(page_size=1):
                pass
    assert served == 2 * 3 + 10 + 1


async def yielded_until_stopped(listing: AsyncIterable[T]) -> tuple[list[T], PaginationError]:
    """What a listing yielded before it raised PaginationError, and the error; a listing that
    would go on forever fails the test instead of hanging it."""
    seen: list[T] = []

    async def drain() -> None:
        with anyio.fail_after(30):
            async for item in listing:
                seen.append(item)
                assert len(seen) < 10_000, "the listing keeps yielding"

    with pytest.raises(PaginationError) as caught:
        await drain()
    return seen, caught.value


def endless_ids(*, items: int) -> AsyncPager[str]:
    """Fresh tokens forever, every page the same ``items`` ids."""
    pages = 0

    async def fetch(token: str | None) -> Page[str]:
        nonlocal pages
        pages += 1
        return Page([f"id{i}" for i in range(items)], next_token=f"t{pages}")

    return AsyncPager(fetch, provider="test", key=lambda item: item)


async def test_pages_that_bring_no_new_id_stop_after_a_hundred_with_the_last_cursor() -> None:
    seen, error = await yielded_until_stopped(endless_ids(items=3))
    assert seen == ["id0", "id1", "id2"]  # each id once
    assert "no new items" in str(error)
    assert error.cursor == "t101"  # the first page, then 100 that brought nothing new


async def test_a_mapped_pager_keeps_the_rule_of_its_ids() -> None:
    seen, _ = await yielded_until_stopped(endless_ids(items=2).map(str.upper))
    assert seen == ["ID0", "ID1"]


async def test_ids_seen_before_are_left_out_of_a_page_that_also_brings_new_ones() -> None:
    pages = [["a", "b"], ["b", "c"], ["c", "a", "d"]]

    async def fetch(token: str | None) -> Page[str]:
        at = int(token or 0)
        return Page(pages[at], next_token=str(at + 1) if at + 1 < len(pages) else None)

    listing = AsyncPager(fetch, provider="test", key=lambda item: item)
    assert [page.items async for page in listing.pages()] == [["a", "b"], ["c"], ["d"]]
    assert [item async for item in listing] == ["a", "b", "c", "d"]
