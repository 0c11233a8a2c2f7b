"""The contract every :class:`~audiencekit.AudienceBackend` keeps, as a pytest test class.

Subclass :class:`BackendContract` in a test module and provide two fixtures:

- ``backend``: an open backend (the contract closes nothing it did not open);
- ``observe``: an async function ``audience_id -> {member id: attributes}`` that reads the
  provider's side directly (the emulator's state, or the backend's own listing), so that the
  contract checks what the provider holds, not only what the backend says.

Async tests are marked for anyio; the ``anyio_backend`` fixture of the test session decides which
event loops they run on. Member ids look like phone numbers so that every provider accepts them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from ..backend import AudienceBackend, Capabilities
from ..errors import NotFoundError, UnsupportedFeatureError, ValidationError
from ..models import Add, Audience, Channel, Member, Operation, Remove

__all__ = ["BackendContract", "Observe"]

Observe = Callable[[str], Awaitable[Mapping[str, Mapping[str, Any]]]]


def number(i: int) -> str:
    """The i-th member id: a valid E.164 number."""
    return f"+1555{i:07d}"


class BackendContract:
    """Tests every backend passes; subclass it and provide ``backend`` and ``observe``."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def audience_name(self) -> str:
        return f"contract-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    async def audience(self, backend: AudienceBackend, audience_name: str) -> Audience:
        return await backend.create_audience(audience_name, channel=Channel.SMS)

    async def test_capabilities_are_a_typed_record(self, backend: AudienceBackend) -> None:
        assert isinstance(backend.capabilities, Capabilities)
        assert backend.capabilities.max_batch >= 1
        assert isinstance(backend.provider, str)
        assert backend.provider

    async def test_audience_lifecycle(self, backend: AudienceBackend, audience_name: str) -> None:
        created = await backend.create_audience(audience_name, channel=Channel.SMS)
        assert created.name == audience_name
        assert created.provider == backend.provider
        fetched = await backend.get_audience(created.id)
        assert (fetched.id, fetched.name) == (created.id, audience_name)
        listed = [a.id async for a in backend.list_audiences()]
        assert created.id in listed
        await backend.delete_audience(created.id)
        with pytest.raises(NotFoundError):
            await backend.get_audience(created.id)

    async def test_create_with_exist_ok_returns_the_audience_of_that_name(
        self, backend: AudienceBackend, audience: Audience
    ) -> None:
        again = await backend.create_audience(audience.name, channel=Channel.SMS, exist_ok=True)
        assert (again.id, again.name) == (audience.id, audience.name)
        named = [a.id async for a in backend.list_audiences() if a.name == audience.name]
        assert named == [audience.id]  # nothing created the second time
        fresh = f"{audience.name}-new"
        made = await backend.create_audience(fresh, channel=Channel.SMS, exist_ok=True)
        assert made.name == fresh
        await backend.delete_audience(made.id)

    async def test_added_members_reach_the_provider(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        members = [Member(number(i), attributes={"first_name": f"N{i}"}) for i in range(5)]
        result = await backend.add_members(audience.id, members)
        assert result.ok
        assert result.applied == 5
        held = await observe(audience.id)
        assert set(held) == {m.id for m in members}
        assert held[number(3)]["first_name"] == "N3"

    async def test_plain_str_ids_are_added_as_members_without_attributes(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        a, b, c = number(1), number(2), number(3)
        mixed: list[Member | str] = [a, Member(b, attributes={"first_name": "B"}), c, a]
        result = await backend.add_members(audience.id, mixed)
        assert result.ok
        assert result.operations == 4
        held = await observe(audience.id)
        assert set(held) == {a, b, c}
        assert held[b]["first_name"] == "B"
        streamed = await backend.add_members(audience.id, (number(i) for i in range(4, 7)))
        assert streamed.applied == 3
        assert set(await observe(audience.id)) == {number(i) for i in range(1, 7)}

    async def test_a_list_with_one_bad_str_id_sends_nothing(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            await backend.add_members(audience.id, [number(1), "  ", number(2)])
        assert len(caught.value.problems) == 1
        with pytest.raises(ValidationError):
            await backend.add_members(audience.id, [number(1), 42])  # type: ignore[list-item]
        assert await observe(audience.id) == {}

    async def test_the_last_operation_per_id_wins(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        a, b, c = number(1), number(2), number(3)
        ops: list[Operation] = [
            Add(Member(a)),
            Add(Member(b)),
            Remove(a),
            Remove(b),
            Add(Member(b)),
            Add(Member(c)),
        ]
        result = await backend.apply(audience.id, ops)
        assert result.ok
        assert set(await observe(audience.id)) == {b, c}

    async def test_removing_an_absent_member_is_applied(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        await backend.add_members(audience.id, [Member(number(1))])
        result = await backend.remove_members(audience.id, [number(1), number(99)])
        assert result.ok
        assert result.applied == 2
        assert await observe(audience.id) == {}

    async def test_async_iterables_are_streamed(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        async def members() -> AsyncIterator[Member]:
            for i in range(7):
                yield Member(number(i))

        result = await backend.add_members(audience.id, members())
        assert result.applied == 7
        assert len(await observe(audience.id)) == 7

    async def test_bad_input_is_refused_before_anything_is_sent(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        not_a_str: Any = 123
        ops: list[Any] = [Add(Member(number(1))), Remove(""), Add(Member(not_a_str)), "junk"]
        with pytest.raises(ValidationError) as caught:
            await backend.apply(audience.id, ops)
        assert len(caught.value.problems) >= 3
        assert await observe(audience.id) == {}

    async def test_listing_members(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        if not backend.capabilities.list_members:
            with pytest.raises(UnsupportedFeatureError):
                [m async for m in backend.iter_members(audience.id)]
            return
        await backend.add_members(audience.id, [Member(number(i)) for i in range(3)])
        listed = {m.id async for m in backend.iter_members(audience.id)}
        assert listed == set(await observe(audience.id)) == {number(i) for i in range(3)}

    async def test_renaming(self, backend: AudienceBackend, audience: Audience) -> None:
        new_name = f"{audience.name}-renamed"
        if not backend.capabilities.rename:
            with pytest.raises(UnsupportedFeatureError):
                await backend.rename_audience(audience.id, new_name)
            return
        renamed = await backend.rename_audience(audience.id, new_name)
        assert renamed.name == new_name
        assert (await backend.get_audience(renamed.id)).name == new_name

    async def test_replacing_members(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        if not backend.capabilities.replace:
            with pytest.raises(UnsupportedFeatureError):
                await backend.replace_members(audience.id, [Member(number(1))])
            return
        await backend.add_members(audience.id, [Member(number(i)) for i in range(3)])
        await backend.replace_members(audience.id, [Member(number(2)), Member(number(7))])
        assert set(await observe(audience.id)) == {number(2), number(7)}

    async def test_deferred_writes(
        self, backend: AudienceBackend, audience: Audience, observe: Observe
    ) -> None:
        members = [Member(number(i)) for i in range(4)]
        if not backend.capabilities.deferred_writes:
            with pytest.raises(UnsupportedFeatureError):
                await backend.add_members(audience.id, members, wait=False)
            return
        sent = await backend.add_members(audience.id, members, wait=False)
        assert sent.pending_count == 4
        assert sent.applied == 0
        done = await backend.wait(sent)
        assert done.applied == 4
        assert done.ok
        assert len(await observe(audience.id)) == 4
