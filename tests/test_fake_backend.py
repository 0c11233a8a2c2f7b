"""FakeBackend keeps the backend contract, models deferred writes, and injects failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from audiencekit import Add, AudienceBackend, Member, PartialFailureError, Remove
from audiencekit.errors import BadRequestError, InternalServerError
from audiencekit.testing import FakeBackend
from audiencekit.testing.contract import BackendContract, Observe


class TestFakeBackendContract(BackendContract):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[FakeBackend]:
        async with FakeBackend(polls_to_apply=2, chunk_size=2) as backend:
            yield backend

    @pytest.fixture
    def observe(self, backend: FakeBackend) -> Observe:
        async def observe(audience_id: str) -> Mapping[str, Mapping[str, Any]]:
            return {k: m.attributes for k, m in backend.members(audience_id).items()}

        return observe


pytestmark = pytest.mark.anyio


def test_it_is_an_audience_backend() -> None:
    assert isinstance(FakeBackend(), AudienceBackend)


async def test_writes_are_applied_only_after_the_polls_they_need() -> None:
    async with FakeBackend(polls_to_apply=3, chunk_size=10) as fake:
        audience = await fake.create_audience("a")
        sent = await fake.add_members(audience.id, [Member("x"), Member("y")], wait=False)
        assert fake.members(audience.id) == {}
        done = await fake.wait(sent)
        assert set(fake.members(audience.id)) == {"x", "y"}
        assert done.polls == 3
        assert [c.method for c in fake.calls].count("poll") == 3


async def test_failures_per_id_land_in_failed() -> None:
    async with FakeBackend() as fake:
        audience = await fake.create_audience("a")
        error = BadRequestError("refused", provider="fake", status=400)
        fake.fail_id("bad", error)
        with pytest.raises(PartialFailureError) as caught:
            await fake.apply(audience.id, [Add(Member("ok")), Add(Member("bad")), Remove("gone")])
        assert caught.value.result.failed == {"bad": error}
        assert caught.value.result.applied == 2
        assert set(fake.members(audience.id)) == {"ok"}


async def test_failures_per_call_are_raised_or_bucketed() -> None:
    async with FakeBackend(chunk_size=2) as fake:
        audience = await fake.create_audience("a")
        fake.fail_next("write", InternalServerError("down", provider="fake", status=503))
        result = await fake.add_members(
            audience.id, [Member(str(i)) for i in range(4)], raise_on_failure=False
        )
        assert len(result.unknown) == 2
        assert result.applied == 2
        writes = [c for c in fake.calls if c.method == "write"]
        assert [len(c.ids) for c in writes] == [2, 2]
        fake.fail_next("get_audience", BadRequestError("no", provider="fake", status=400))
        with pytest.raises(BadRequestError):
            await fake.get_audience(audience.id)
        assert (await fake.get_audience(audience.id)).size == 2
