"""Async auto-pagination: ``async for item in pager`` walks every page, one request a page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

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


class AsyncPager(Generic[T]):
    """Iterates items across pages.

    ``fetch(token)`` gets one page (``None`` for the first). Iteration stops when a page has no
    next token; a token that comes back a second time raises :class:`PaginationError` instead of
    looping or silently stopping short. Each ``async for`` starts again from the first page.
    """

    def __init__(self, fetch: Fetch[T], *, provider: str, what: str = "items") -> None:
        self._fetch = fetch
        self._provider = provider
        self._what = what

    def __repr__(self) -> str:
        return f"<AsyncPager {self._provider} {self._what}>"

    def __aiter__(self) -> AsyncIterator[T]:
        return _Items(self.pages())

    def pages(self) -> AsyncIterator[Page[T]]:
        """Iterate the pages themselves (for their totals, or to work a page at a time)."""
        return _Pages(self._fetch, self._provider, self._what)

    def map(self, func: Callable[[T], U]) -> AsyncPager[U]:
        """A pager over the same pages whose items are ``func(item)``."""
        fetch = self._fetch

        async def mapped(token: str | None) -> Page[U]:
            page = await fetch(token)
            return Page([func(item) for item in page.items], page.next_token, page.total)

        return AsyncPager(mapped, provider=self._provider, what=self._what)


class _Pages(Generic[T]):
    def __init__(self, fetch: Fetch[T], provider: str, what: str) -> None:
        self._fetch = fetch
        self._provider = provider
        self._what = what
        self._seen: set[str] = set()
        self._token: str | None = None
        self._done = False

    def __aiter__(self) -> _Pages[T]:
        return self

    async def __anext__(self) -> Page[T]:
        if self._done:
            raise StopAsyncIteration
        page = await self._fetch(self._token)
        token = page.next_token or None
        if token is None:
            self._done = True
        elif token in self._seen or token == self._token:
            self._done = True
            raise PaginationError(
                f"{self._provider} returned the page token {token!r} twice while listing "
                f"{self._what}; stopped instead of looping",
                provider=self._provider,
            )
        else:
            if self._token is not None:
                self._seen.add(self._token)
            self._token = token
        return page


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
