"""Dexatel as other tools left it: numbers stored without "+", one number stored twice, deletes
whose answer was lost. Everything is checked against what the emulator holds afterwards."""

from __future__ import annotations

import pytest

from audiencekit import Member, NotFoundError
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing
from audiencekit.workflows import sync

from ..test_pages import yielded_until_stopped
from .conftest import MakeBackend
from .test_dexatel_backend import contacts, writes

pytestmark = pytest.mark.anyio

#: Contacts another client created: digits with the country code, no "+".
THEIRS = [
    {"number": "37477000001", "first_name": "Ani"},
    {"number": "37477000002", "first_name": "Aram"},
    {"number": "37477000003"},
]
E164 = ["+37477000001", "+37477000002", "+37477000003"]
#: More of them, so that one lookup is cheaper than reading the audience: a search is made.
FILLER = [{"number": f"1555{i:07d}"} for i in range(300)]


async def audience_written_by_another_tool(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> str:
    backend = make_backend()
    audience = await backend.create_audience("theirs", channel="SMS")
    assert emulators.dexatel.seed_contacts(audience.id, THEIRS + FILLER) == 303
    assert sorted(contacts(emulators, audience.id))[-3:] == [c["number"] for c in THEIRS]
    return audience.id


def ours(emulators: EmulatorServer, audience_id: str) -> dict[str, dict[str, str]]:
    """What the emulator holds of THEIRS (as stored)."""
    return {k: v for k, v in contacts(emulators, audience_id).items() if k.startswith("374")}


async def test_listing_reads_numbers_stored_without_plus_as_e164(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    audience_id = await audience_written_by_another_tool(make_backend, emulators)
    backend = make_backend()
    members = {m.id: m.attributes async for m in backend.iter_members(audience_id)}
    assert len(members) == 303
    assert all(n.startswith("+") for n in members)
    theirs = {E164[0]: {"first_name": "Ani"}, E164[1]: {"first_name": "Aram"}, E164[2]: {}}
    assert {n: members[n] for n in E164} == theirs
    listed = [c async for c in backend.client.list_contacts(audience_id, search="37477")]
    assert sorted(c.number for c in listed) == E164
    assert sorted(c.extra["stored_number"] for c in listed) == [c["number"] for c in THEIRS]
    one = await backend.client.get_contact(audience_id, listed[0].id)
    assert one.number in E164


async def test_upsert_updates_a_contact_stored_without_plus(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    audience_id = await audience_written_by_another_tool(make_backend, emulators)
    backend = make_backend()
    emulators.dexatel.requests.clear()
    result = await backend.add_members(
        audience_id, [Member("+37477000001", attributes={"first_name": "Anahit"})]
    )
    assert result.ok
    assert result.applied == 1
    held = contacts(emulators, audience_id)
    assert held["37477000001"] == {"first_name": "Anahit"}  # updated in place, not duplicated
    assert len(held) == 303
    assert [(m, s) for m, _, s in writes(emulators)] == [("PUT", 200)]  # no POST, no 409
    searches = [r for r in emulators.dexatel.requests if "filter%5Bsearch%5D" in r.query]
    assert len(searches) == 1  # found by one search for the digits


async def test_remove_deletes_a_contact_stored_without_plus(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    audience_id = await audience_written_by_another_tool(make_backend, emulators)
    backend = make_backend()
    result = await backend.remove_members(audience_id, ["+37477000002", "37477000003"])
    assert result.ok
    assert result.applied == 2
    assert list(ours(emulators, audience_id)) == ["37477000001"]
    assert len(contacts(emulators, audience_id)) == 301


async def test_sync_keeps_what_it_was_told_to_keep(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    audience_id = await audience_written_by_another_tool(make_backend, emulators)
    backend = make_backend()
    exactly = [
        Member(E164[0], attributes={"first_name": "Ani"}),
        Member(E164[1], attributes={"first_name": "Aram"}),
        Member(E164[2]),
    ] + [Member("+" + c["number"]) for c in FILLER]
    emulators.dexatel.requests.clear()
    report = await sync(backend, audience_id, exactly)
    assert (report.added, report.changed, report.removed, report.unchanged) == (0, 0, 0, 303)
    assert writes(emulators) == []
    assert len(contacts(emulators, audience_id)) == 303

    report = await sync(backend, audience_id, exactly[:2])
    assert report.removed == 301
    assert report.result.ok
    assert sorted(contacts(emulators, audience_id)) == ["37477000001", "37477000002"]


async def test_a_provider_that_stores_digits_reads_back_e164(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    emulators.dexatel.config.number_storage = "digits"
    backend = make_backend()
    audience = await backend.create_audience("digits", channel="SMS")
    members = [Member(f"+3747700{i:04d}", attributes={"first_name": f"n{i}"}) for i in range(150)]
    assert (await backend.add_members(audience.id, members)).applied == 150
    assert all(not n.startswith("+") for n in contacts(emulators, audience.id))
    listed = {m.id: m.attributes async for m in backend.iter_members(audience.id)}
    assert listed == {m.id: m.attributes for m in members}
    emulators.dexatel.requests.clear()
    again = await backend.add_members(audience.id, members)  # found, equal: nothing written
    assert again.applied == 150
    assert writes(emulators) == []


async def test_a_number_stored_in_both_spellings_is_removed_in_both(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    emulators.dexatel.config.numbers_match_ignoring_plus = False
    backend = make_backend()
    audience = await backend.create_audience("twice", channel="SMS")
    both = [{"number": "+37477000009"}, {"number": "37477000009"}, {"number": "+15550000001"}]
    assert emulators.dexatel.seed_contacts(audience.id, both) == 3
    result = await backend.remove_members(audience.id, ["+37477000009"])
    assert result.ok
    assert list(contacts(emulators, audience.id)) == ["+15550000001"]


async def test_a_delete_whose_answer_was_lost_counts_as_done(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend()
    audience = await backend.create_audience("lost", channel="SMS")
    contact = await backend.client.create_contact(audience.id, "+37477000001")
    emulators.dexatel.set_faults(
        FaultPlan([Fault.http_status(503, "DELETE *", calls=[1, 3], timing=Timing.AFTER)])
    )
    await backend.client.delete_contact(audience.id, contact.id)  # 503 after deleting, then 404
    assert contacts(emulators, audience.id) == {}
    await backend.delete_audience(audience.id)  # the same for the audience
    with pytest.raises(NotFoundError):
        await backend.get_audience(audience.id)
    statuses = [(r.method, r.status) for r in emulators.dexatel.requests if r.method == "DELETE"]
    assert statuses == [("DELETE", 503), ("DELETE", 404), ("DELETE", 503), ("DELETE", 404)]


async def test_deleting_what_never_existed_is_still_not_found(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend()
    audience = await backend.create_audience("never", channel="SMS")
    emulators.dexatel.set_faults(FaultPlan([Fault.http_status(429, "DELETE *", calls=[1])]))
    with pytest.raises(NotFoundError):  # a 429 is a refusal: nothing happened before the 404
        await backend.client.delete_contact(audience.id, "0d6f3c52-8d7e-4a8b-9a51-3c2a1b0e9f77")


def listed(emulators: EmulatorServer, path_end: str) -> list[str]:
    """The queries of the listing requests of a path."""
    return [
        r.query
        for r in emulators.dexatel.requests
        if r.method == "GET" and r.path.endswith(path_end)
    ]


async def test_contacts_on_endless_pages_are_yielded_once_then_the_listing_stops(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    """Fresh page tokens with the same contacts forever: each number once, then
    PaginationError naming the last page token."""
    backend = make_backend()
    audience = await backend.create_audience("endless", channel="SMS")
    emulators.dexatel.seed_contacts(audience.id, THEIRS)
    emulators.dexatel.config.endless_pages = True

    seen, error = await yielded_until_stopped(backend.iter_members(audience.id))

    assert sorted(m.id for m in seen) == E164
    pages = listed(emulators, "/contacts")
    assert len(pages) <= 102
    assert error.cursor is not None
    assert all(f"page_token={error.cursor}&" not in query for query in pages)  # a fresh one


async def test_audiences_on_endless_pages_are_yielded_once_then_the_listing_stops(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend()
    made = {(await backend.create_audience(f"loop{i}", channel="SMS")).id for i in range(3)}
    emulators.dexatel.config.endless_pages = True

    seen, error = await yielded_until_stopped(backend.list_audiences())

    assert sorted(a.id for a in seen) == sorted(made)
    assert len(listed(emulators, "/audiences")) <= 102
    assert error.cursor is not None
