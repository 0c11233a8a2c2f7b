"""DexatelBackend against the Dexatel emulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from audiencekit import Add, Member, NotFoundError, Remove, ValidationError
from audiencekit.errors import ConflictError, UnsupportedFeatureError
from audiencekit.providers.dexatel import DexatelBackend, normalize_number
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing
from audiencekit.testing.contract import BackendContract, Observe

from .conftest import MakeBackend

pytestmark = pytest.mark.anyio

FIELDS = {"first_name": "first_name", "last_name": "last_name", "timestamp": "custom1",
          "date": "custom2"}  # fmt: skip


def contacts(server: EmulatorServer, audience_id: str) -> dict[str, dict[str, Any]]:
    """What the emulator holds: number -> the fields that are set (canonical names)."""
    for account in server.dexatel.snapshot().values():
        for audience in account["audiences"]:
            if audience["id"] == audience_id:
                return {
                    c["number"]: {FIELDS[k]: c[k] for k in FIELDS if c.get(k) is not None}
                    for c in audience["contacts"]
                }
    raise KeyError(audience_id)


def writes(server: EmulatorServer) -> list[tuple[str, str, int]]:
    return [
        (r.method, r.path, r.status)
        for r in server.dexatel.requests
        if r.method in ("POST", "PUT", "DELETE")
    ]


class TestDexatelContract(BackendContract):
    @pytest.fixture
    def observe(self, emulators: EmulatorServer) -> Observe:
        async def observe(audience_id: str) -> Mapping[str, Mapping[str, Any]]:
            return contacts(emulators, audience_id)

        return observe


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("+37477000001", "+37477000001"),
        ("+374 77 00-00.01", "+37477000001"),
        ("(+1) 555 000 0001", "+15550000001"),
        ("0037477000001", "+37477000001"),
        ("37477000001", "+37477000001"),
        ("+0123456789", None),
        ("+12345", None),
        ("+1234567890123456", None),
        ("call me", None),
        ("+1 555 CALL NOW", None),
    ],
)
def test_numbers_are_normalised_one_way(raw: str, normalized: str | None) -> None:
    assert normalize_number(raw) == normalized


async def test_bad_numbers_and_fields_are_named_before_sending(
    backend: DexatelBackend, emulators: EmulatorServer
) -> None:
    audience = await backend.create_audience("strict", channel="SMS")
    emulators.dexatel.requests.clear()
    members = [
        Member("+37477000001", attributes={"first_name": "Ada"}),
        Member("not a number"),
        Member("+37477000002", attributes={"nickname": "x"}),
        Member("+37477000003", attributes={"first_name": "x" * 33}),
        Member("+37477000004", attributes={"custom2": 7}),
    ]
    with pytest.raises(ValidationError) as caught:
        await backend.add_members(audience.id, members)
    assert caught.value.ids == ("not a number", "+37477000002", "+37477000003", "+37477000004")
    assert emulators.dexatel.requests == []


async def test_adding_is_an_idempotent_upsert(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend()
    audience = await backend.create_audience("upsert", channel="SMS")
    await backend.add_members(
        audience.id,
        [Member("+37477000001", attributes={"first_name": "Ada", "timestamp": "t"}),
         Member("+37477000002")],
    )  # fmt: skip
    emulators.dexatel.requests.clear()
    result = await backend.add_members(
        audience.id,
        [
            Member("374 77 000001", attributes={"first_name": "Ada", "last_name": "L"}),
            Member("+37477000002"),
        ],
    )
    assert result.applied == 2
    held = contacts(emulators, audience.id)
    assert held == {
        "+37477000001": {"first_name": "Ada", "last_name": "L", "custom1": "t"},
        "+37477000002": {},
    }
    puts = [r for r in emulators.dexatel.requests if r.method == "PUT"]
    assert len(puts) == 1
    assert puts[0].body == {"data": {"last_name": "L"}}  # only the field that differed


async def test_removing_treats_absent_as_applied(
    backend: DexatelBackend, emulators: EmulatorServer
) -> None:
    audience = await backend.create_audience("rm", channel="SMS")
    await backend.add_members(audience.id, [Member("+37477000001"), Member("+37477000002")])
    result = await backend.remove_members(audience.id, ["+37477000001", "+37477009999"])
    assert result.applied == 2
    assert set(contacts(emulators, audience.id)) == {"+37477000002"}


async def test_removal_searches_a_few_numbers_and_lists_for_many(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend(chunk_size=500)
    audience = await backend.create_audience("big", channel="SMS")
    await backend.add_members(audience.id, (Member(f"+1555{i:07d}") for i in range(1_000)))

    emulators.dexatel.requests.clear()
    await backend.remove_members(audience.id, ["+15550000001", "+15550000002", "+15550000003"])
    searches = [r for r in emulators.dexatel.requests if "filter%5Bsearch%5D" in r.query]
    assert len(searches) == 3

    emulators.dexatel.requests.clear()
    await backend.remove_members(audience.id, (f"+1555{i:07d}" for i in range(100, 600)))
    lists = [r for r in emulators.dexatel.requests if r.method == "GET" and "contacts" in r.path]
    assert len(lists) == 10  # one read of the 997 contacts left, 100 a page; no searches
    assert len(contacts(emulators, audience.id)) == 497


async def test_2500_contacts_with_10_percent_faults_land_exactly_once(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend(concurrency=8)
    audience = await backend.create_audience("faulty", channel="SMS")
    emulators.dexatel.set_faults(
        FaultPlan(
            [
                Fault.http_status(429, "POST */contacts", rate=0.03, retry_after=0.01),
                Fault.http_status(503, "POST */contacts", rate=0.02),
                Fault.http_status(500, "POST */contacts", rate=0.02, timing=Timing.AFTER),
                Fault.drop("POST */contacts", rate=0.015),
                Fault.drop("POST */contacts", rate=0.015, timing=Timing.AFTER),
                Fault.http_status(503, "GET */contacts", rate=0.05),
            ],
            seed=2500,
        )
    )
    members = [Member(f"+1555{i:07d}", attributes={"first_name": f"n{i}"}) for i in range(2_500)]
    first = await backend.add_members(audience.id, members)
    assert first.ok
    assert first.applied == 2_500
    assert sum(emulators.dexatel.faults.fired()) > 200  # about one request in ten failed

    held = contacts(emulators, audience.id)
    assert len(held) == 2_500
    assert all(held[m.id] == {"first_name": m.attributes["first_name"]} for m in members)
    numbers = [
        c["number"]
        for a in emulators.dexatel.snapshot()["account"]["audiences"]
        for c in a["contacts"]
    ]
    assert len(numbers) == len(set(numbers)) == 2_500  # no duplicates

    emulators.dexatel.requests.clear()
    again = await backend.add_members(audience.id, members)  # faults still on
    assert again.applied == 2_500
    assert writes(emulators) == []  # the same run again sends no write at all
    assert contacts(emulators, audience.id) == held


async def test_the_first_run_with_faults_leaves_nothing_unaccounted(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend()
    audience = await backend.create_audience("acct", channel="SMS")
    emulators.dexatel.set_faults(
        FaultPlan(
            [
                Fault.http_status(500, "POST */contacts", calls=[2, 5], timing=Timing.AFTER),
                Fault.http_status(500, "GET */contacts", calls=[1, 2, 3, 4, 5, 6]),
            ]
        )
    )
    members = [Member(f"+1555{i:07d}") for i in range(10)]
    result = await backend.add_members(audience.id, members, raise_on_failure=False)
    held = set(contacts(emulators, audience.id))
    # whatever is unknown may or may not be there; whatever is applied is there
    applied = {m.id for m in members} - set(result.unknown) - set(result.failed)
    assert applied <= held
    assert len(applied) == result.applied


async def test_members_are_listed_page_by_page(
    backend: DexatelBackend, emulators: EmulatorServer
) -> None:
    audience = await backend.create_audience("list", channel="SMS")
    await backend.add_members(
        audience.id, (Member(f"+1555{i:07d}", attributes={"last_name": "x"}) for i in range(1_001))
    )
    emulators.dexatel.requests.clear()
    listed = [m async for m in backend.iter_members(audience.id)]
    assert len(listed) == 1_001
    assert Member("+15550000005", attributes={"last_name": "x"}) in listed  # created concurrently
    assert len({m.id for m in listed}) == 1_001
    pages = [r for r in emulators.dexatel.requests if r.path.endswith("/contacts")]
    assert len(pages) == 11


async def test_audiences(backend: DexatelBackend) -> None:
    with pytest.raises(ValidationError, match="channel"):
        await backend.create_audience("nochannel")
    with pytest.raises(ValidationError):
        await backend.create_audience("has space", channel="SMS")
    audience = await backend.create_audience("aud", channel="viber")
    assert audience.channel.value == "VIBER"
    assert audience.size == 0
    with pytest.raises(ConflictError) as caught:
        await backend.create_audience("aud", channel="SMS")
    assert caught.value.code == 1309
    assert (await backend.create_audience("aud", channel="Viber", exist_ok=True)).id == audience.id
    with pytest.raises(ConflictError, match="exists with channel VIBER, not SMS"):
        await backend.create_audience("aud", channel="SMS", exist_ok=True)
    renamed = await backend.rename_audience(audience.id, "aud2")
    assert renamed.name == "aud2"
    with pytest.raises(UnsupportedFeatureError):
        await backend.replace_members(audience.id, [])
    await backend.delete_audience(audience.id)
    with pytest.raises(NotFoundError) as missing:
        await backend.get_audience(audience.id)
    assert missing.value.code == 1301


async def test_apply_mixes_adds_and_removes_last_wins(
    backend: DexatelBackend, emulators: EmulatorServer
) -> None:
    audience = await backend.create_audience("mix", channel="SMS")
    ops = [
        Add(Member("+37477000001", attributes={"first_name": "A"})),
        Remove("+37477000001"),
        Add(Member("+37477000002")),
        Add(Member("0037477000001", attributes={"first_name": "B"})),  # same number, other form
    ]
    await backend.apply(audience.id, ops)
    assert contacts(emulators, audience.id) == {
        "+37477000001": {"first_name": "B"},
        "+37477000002": {},
    }
