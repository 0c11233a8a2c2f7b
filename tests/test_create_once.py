"""create_once: a create that is not safe to replay is never done twice."""

from __future__ import annotations

import pytest

from audiencekit import APIConnectionError, BadRequestError, InternalServerError
from audiencekit._bulk import create_once

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
