"""Async auto-pagination: ``async for item in pager`` walks every page, one request a page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import attrs

from .errors import PaginationError

__all__ = ["AsyncPager", "Page"]

T = TypeVar("T")
U = TypeVar("U")


@attrs.frozen
class Page(Generic[T]):
    """One page: its items, the token of the next page (None on the last), the total if known."""

    items: Sequence[T]
    next_token: str | None = None
    total: int | None = None


Fetch = Callable[[str | None], Awaitable[Page[T]]]
#: The id of a fetched item, by which a listing knows the items it has yielded.
Key = Callable[[Any], Hashable]


#: The most pages one listing reads unless told otherwise (100 million items at 100 a page).
DEFAULT_MAX_PAGES = 1_000_000
#: Pages a listing may read past what the provider's own total allows (items added meanwhile).
_SLACK_PAGES = 10
#: Pages in a row, each with a next token, that bring no new item (none at all, or only ids
#: already yielded), after which a listing cannot be progressing.
_MAX_STALE_RUN = 100


class AsyncPager(Generic[T]):
    """Iterates items across pages.

    ``fetch(token)`` gets one page (``None`` for the first). Iteration stops when a page has no
    next token. With ``key`` (an item's id), a listing yields each id once. It raises
    :class:`PaginationError` (``cursor``: the last page token handed back) instead of looping
    or silently stopping short when it cannot be making progress: a token comes back a second
    time, the pages outnumber what the provider's own total allows (twice over, plus a few),
    100 pages in a row bring no new item (empty, or only ids already yielded), or
    ``max_pages`` (settable; :data:`DEFAULT_MAX_PAGES`) is passed. Each ``async for`` starts
    again from the first page.
    """

    def __init__(
        self,
        fetch: Fetch[T],
        *,
        provider: str,
        what: str = "items",
        max_pages: int = DEFAULT_MAX_PAGES,
        key: Callable[[T], Hashable] | None = None,
    ) -> None:
        self._fetch: Fetch[Any] = fetch
        self._provider = provider
        self._what = what
        self._key: Key | None = key
        self._convert: Callable[[Any], T] | None = None  # fetched item -> item (see map)
        self.max_pages = max_pages

    def __repr__(self) -> str:
        return f"<AsyncPager {self._provider} {self._what}>"

    def __aiter__(self) -> AsyncIterator[T]:
        return _Items(self.pages())

    def pages(self) -> AsyncIterator[Page[T]]:
        """Iterate the pages themselves (for their totals, or to work a page at a time); with
        ``key``, a page holds only the ids the listing had not yielded yet."""
        return _Pages(self, self._convert)

    def map(self, func: Callable[[T], U]) -> AsyncPager[U]:
        """A pager over the same pages whose items are ``func(item)`` (known by the same ids)."""
        convert = self._convert
        mapped = AsyncPager[U](self._fetch, provider=self._provider, what=self._what,
                               max_pages=self.max_pages, key=self._key)  # fmt: skip
        mapped._convert = func if convert is None else lambda item: func(convert(item))
        return mapped


class _Pages(Generic[T]):
    def __init__(self, pager: AsyncPager[Any], convert: Callable[[Any], T] | None) -> None:
        self._fetch = pager._fetch
        self._provider = pager._provider
        self._what = pager._what
        self._max_pages = pager.max_pages
        self._key = pager._key
        self._convert = convert
        self._seen: set[str] = set()
        self._ids: set[Hashable] = set()  # the ids yielded, with a key
        self._token: str | None = None
        self._done = False
        self._pages = 0
        self._stale_run = 0
        self._largest = 0  # the most items a page has held
        self._total = 0  # the largest total the provider has given

    def __aiter__(self) -> _Pages[T]:
        return self

    async def __anext__(self) -> Page[T]:
        if self._done:
            raise StopAsyncIteration
        if self._pages >= self._max_pages:
            self._stop(f"had more than max_pages={self._max_pages} pages")
        page = await self._fetch(self._token)
        self._pages += 1
        fresh = self._fresh(page.items)
        token = page.next_token or None
        if token is None:
            self._done = True
        else:
            problem = self._stalled(page, token, fresh)
            if self._token is not None:
                self._seen.add(self._token)
            self._token = token
            if problem:
                self._stop(problem)
        convert = self._convert
        items = fresh if convert is None else [convert(item) for item in fresh]
        return Page(items, token, page.total)

    def _fresh(self, items: Sequence[Any]) -> Sequence[Any]:
        """The items of a page whose ids the listing has not yielded (all of them, keyless)."""
        key = self._key
        if key is None:
            return items
        fresh = []
        for item in items:
            found = key(item)
            if found not in self._ids:
                self._ids.add(found)
                fresh.append(item)
        return fresh

    def _stalled(self, page: Page[Any], token: str, fresh: Sequence[Any]) -> str:
        """Why this listing cannot be making progress, or "" while it may be."""
        if token in self._seen or token == self._token:
            return f"returned the page token {token!r} twice"
        self._largest = max(self._largest, len(page.items))
        self._stale_run = 0 if fresh else self._stale_run + 1
        if self._stale_run >= _MAX_STALE_RUN:
            return (
                f"returned {self._stale_run} pages in a row with no new {self._what}, each with "
                "a next token"
            )
        if page.total is not None and page.total >= 0:
            self._total = max(self._total, page.total)
            allowed = 2 * -(-self._total // max(self._largest, 1)) + _SLACK_PAGES
            if self._pages > allowed:
                return (
                    f"returned {self._pages} pages, more than its own total of {self._total} allows"
                )
        return ""

    def _stop(self, problem: str) -> NoReturn:
        self._done = True
        raise PaginationError(
            f"{self._provider} {problem} while listing {self._what}; stopped instead of looping",
            provider=self._provider,
            cursor=self._token,
        )


class _Items(Generic[T]):
    def __init__(self, pages: AsyncIterator[Page[T]]) -> None:
        self._pages = pages
        self._buffer: list[T] = []
        self._index = 0

    def __aiter__(self) -> _Items[T]:
        return self

    async def __anext__(self) -> T:
        while self._index >= len(self._buffer):
            page = await self._pages.__anext__()
            self._buffer = list(page.items)
            self._index = 0
        item = self._buffer[self._index]
        self._index += 1
        return item
