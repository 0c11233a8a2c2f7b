"""create_once: a create that is not safe to replay is never done twice."""

from __future__ import annotations

import pytest

from audiencekit import (
    APIConnectionError,
    APITimeoutError,
    NotFoundError,
    PollTimeoutError,
    RateLimitError,
)
from audiencekit.core.single import create_once
from audiencekit.errors import (
    BadRequestError,
    InternalServerError,
    UnexpectedResponseError,
    may_have_taken_effect,
)

pytestmark = pytest.mark.anyio


class Provider:
    """Creates a record; some attempts fail before or after taking effect."""

    def __init__(self, script: list[str]) -> None:
        # per attempt: "ok", "before" (not done), "after" (done), "refused"
        self.script = list(script)
        self.records: list[str] = []
        self.lookups = 0

    async def create(self) -> str:
        step = self.script.pop(0)
        if step in ("ok", "after"):
            self.records.append("r")
        if step == "before":
            raise InternalServerError("down", provider="p", status=503)
        if step == "after":
            raise APIConnectionError("dropped", provider="p", request_sent=True)
        if step == "refused":
            raise BadRequestError("no", provider="p", status=400)
        return "created"

    async def find(self) -> str | None:
        self.lookups += 1
        return "found" if self.records else None


@pytest.mark.parametrize(
    ("script", "result", "lookups"),
    [
        (["ok"], "created", 0),
        (["after"], "found", 1),
        (["before", "ok"], "created", 1),
        (["before", "before", "after"], "found", 3),  # the last lookup saves the last attempt
    ],
)
async def test_created_exactly_once(script: list[str], result: str, lookups: int) -> None:
    provider = Provider(script)
    assert await create_once(provider.create, provider.find, attempts=3) == result
    assert provider.records == ["r"]
    assert provider.lookups == lookups


async def test_gives_up_with_the_last_error() -> None:
    provider = Provider(["before", "before", "before"])
    with pytest.raises(InternalServerError):
        await create_once(provider.create, provider.find, attempts=3)
    assert provider.records == []
    assert provider.lookups == 3


async def test_a_definite_refusal_is_not_looked_up() -> None:
    provider = Provider(["refused"])
    with pytest.raises(BadRequestError):
        await create_once(provider.create, provider.find)
    assert provider.lookups == 0


async def test_a_create_sent_again_waits_the_backoff_first() -> None:
    provider = Provider(["before", "before", "ok"])
    pauses: list[int] = []

    async def pause(attempt: int) -> None:
        pauses.append(attempt)

    assert await create_once(provider.create, provider.find, attempts=3, pause=pause) == "created"
    assert pauses == [0, 1]  # before the second and the third attempt, never after the last


@pytest.mark.parametrize(
    ("error", "maybe"),
    [
        (APIConnectionError("dropped", provider="p", request_sent=True), True),
        (APIConnectionError("refused", provider="p", request_sent=False), False),
        (APITimeoutError("read", provider="p"), True),
        (InternalServerError("down", provider="p", status=503), True),
        (BadRequestError("timeout", provider="p", status=408), True),
        (BadRequestError("no", provider="p", status=400), False),
        (RateLimitError("slow down", provider="p", status=429), False),
        (NotFoundError("gone", provider="p", status=404), False),
        (UnexpectedResponseError("no token", provider="p"), True),
        (PollTimeoutError("still indexing", pending=[], waited=1.0), True),
        (ValueError("not ours"), False),
    ],
)
def test_one_rule_says_what_may_have_taken_effect(error: BaseException, maybe: bool) -> None:
    assert may_have_taken_effect(error) is maybe
