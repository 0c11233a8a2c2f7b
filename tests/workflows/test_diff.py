"""The one diff of the workflows: wanted members sorted through temporary files, merged in id
order with the journal or the listing; sync and migrate over runs far smaller than the input,
so that every merge path (many runs, duplicates across runs, ids on both sides) is exercised
against the emulators, checking what they hold."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from audiencekit import Member
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore, scope_of
from audiencekit.state.base import ABSENT, Entry, fingerprint
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import diff as diff_module
from audiencekit.workflows import migrate, sync
from audiencekit.workflows.diff import Diff, SortedSpill, ids_digest

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> int:
    """Runs of 64 values and steps of 50: a few hundred members make many runs and steps."""
    monkeypatch.setattr(diff_module, "RUN_SIZE", 64)
    monkeypatch.setattr(diff_module, "STEP", 50)
    return 64


async def test_a_spill_reads_back_in_code_point_order_the_last_value_of_an_id_winning(
    small_runs: int,
) -> None:
    rng = random.Random(7)
    ids = [f"u{rng.randrange(400)}" for _ in range(1_000)] + ["é", "z", "Ω", "😀", "Z", "a\0b"]
    spill = SortedSpill(lambda key, value: (value,))
    expected: dict[str, int] = {}
    for position, member_id in enumerate(ids):
        if spill.put(member_id, position):
            await spill.spill()
        expected[member_id] = position
    await spill.seal()
    assert len(spill._files) > 3  # the runs really went to files
    try:
        for _ in range(2):  # it can be read again
            read = list(spill)
            assert [k for k, _ in read] == sorted(expected)  # Python's order is code point order
            assert {k: v[0] for k, v in read} == expected  # the last value of each id
    finally:
        spill.close()


def entries(**held: tuple[str, str]) -> Iterator[tuple[str, Entry]]:
    return ((k, Entry(fp, status)) for k, (fp, status) in sorted(held.items()))


def wanted(**members: dict[str, object]) -> list[tuple[str, tuple[str, dict[str, object]]]]:
    return [(k, (fingerprint(a), a)) for k, a in sorted(members.items())]


def test_the_diff_against_the_journal_counts_each_kind_once() -> None:
    same = {"plan": "gold"}
    diff = Diff(
        wanted(a=same, b=same, c={"plan": "new"}, d=same, e=same),
        entries(
            a=(fingerprint(same), "settled"),  # unchanged
            b=(fingerprint(same), "unknown"),  # may be held with either value: written again
            c=(fingerprint(same), "settled"),  # changed
            d=(fingerprint(same), "intended"),  # never accepted: an add
            x=(fingerprint(same), "settled"),  # no longer wanted
            y=(ABSENT, "unknown"),  # a removal whose outcome is unknown: removed again
        ),
        listed=False,
    )
    ops = [(type(op).__name__, op.id) for op, _ in diff._compare()]
    assert ops == [("Add", "b"), ("Add", "c"), ("Add", "d"), ("Add", "e"),
                   ("Remove", "x"), ("Remove", "y")]  # fmt: skip
    assert (diff.added, diff.changed, diff.removed, diff.unchanged) == (2, 2, 2, 1)
    assert diff.changed_ids == {"b", "c"}
    assert diff.removed_ids == {"x", "y"}


def test_held_entries_out_of_id_order_stop_the_diff_instead_of_removing_members() -> None:
    held = [("b", Entry("f", "settled")), ("a", Entry("f", "settled"))]
    diff = Diff(wanted(a={}, b={}), iter(held), listed=False)
    with pytest.raises(RuntimeError, match="out of id order"):
        list(diff._compare())


def test_ids_digest_is_the_same_whatever_the_order() -> None:
    ids = [f"id-{i}" for i in range(100)] + ["é", "Z"]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert ids_digest(ids) == ids_digest(shuffled) != ids_digest(ids[:-1])


def people(ids: list[int], plan: str = "gold") -> list[Member]:
    return [Member(f"user-{i:04d}", attributes={"plan": plan}) for i in ids]


async def test_sync_over_many_runs_leaves_the_provider_and_the_journal_exact(
    small_runs: int, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    rng = random.Random(11)
    first = list(range(1_000))
    rng.shuffle(first)
    await batch.create_audience("runs")
    # Each id twice, the second with another plan: the later one wins, across runs too.
    report = await sync(batch, "runs", people(first, "old") + people(first), state=state)
    assert (report.added, report.changed, report.removed) == (1_000, 0, 0)
    held = emulators.batch.members("runs")
    assert set(held) == {f"user-{i:04d}" for i in first}
    assert {a["plan"] for a in held.values()} == {"gold"}

    second = [i for i in first if i % 10] + list(range(1_000, 1_050))  # 100 go, 50 come
    rng.shuffle(second)
    changed = [i for i in second if i % 7 == 0 and i < 1_000]
    desired = [m if int(m.id[5:]) not in changed else Member(m.id, attributes={"plan": "new"})
               for m in people(second)]  # fmt: skip
    emulators.batch.requests.clear()
    report = await sync(batch, "runs", desired, state=state)
    assert (report.added, report.changed, report.removed) == (50, len(changed), 100)
    assert report.unchanged == 900 - len(changed)
    assert report.applied == {"added": 50, "changed": len(changed), "removed": 100}
    held = emulators.batch.members("runs")
    assert set(held) == {m.id for m in desired}
    assert all(held[f"user-{i:04d}"] == {"plan": "new"} for i in changed)
    sent = [op["id"] for r in emulators.batch.requests if r.path.endswith("/update")
            for op in r.body["ids"]]  # fmt: skip
    assert len(sent) == len(set(sent)) == 50 + len(changed) + 100
    assert state.count(scope_of(batch), "runs") == 950


async def test_sync_of_a_listing_provider_over_many_runs_adopts_the_listing(
    small_runs: int, dexatel: DexatelBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    audience = await dexatel.create_audience("listed-runs", channel="SMS")
    numbers = [f"+1555{i:07d}" for i in range(300)]
    random.Random(5).shuffle(numbers)
    await sync(dexatel, audience.id, [Member(n) for n in numbers], state=state)
    keep = sorted(numbers)[::2]
    report = await sync(dexatel, audience.id, [Member(n) for n in keep], state=state)
    assert (report.added, report.removed, report.unchanged) == (0, 150, 150)
    listed = {m.id async for m in dexatel.iter_members(audience.id)}
    assert listed == set(keep)
    assert set(state.pushed(scope_of(dexatel), audience.id)) == set(keep)


async def test_migrate_over_many_runs_verifies_the_target(
    small_runs: int,
    dexatel: DexatelBackend,
    batch: BatchBackend,
    state: StateStore,
    emulators: EmulatorServer,
) -> None:
    source = await dexatel.create_audience("source-runs", channel="SMS")
    numbers = [f"+1555{i:07d}" for i in range(250)]
    await dexatel.add_members(source.id, [Member(n) for n in numbers])
    report = await migrate(dexatel, source.id, batch, "target-runs", create=True, state=state)
    assert report.ok
    assert report.verified
    assert (report.read, report.applied) == (250, 250)
    assert set(emulators.batch.members("target-runs")) == set(numbers)

    await dexatel.remove_members(source.id, numbers[:40])
    dry = await migrate(dexatel, source.id, batch, "target-runs", dry_run=True, state=state)
    assert (dry.sent, dry.removed, dry.unchanged) == (40, 40, 210)
    again = await migrate(dexatel, source.id, batch, "target-runs", state=state)
    assert (again.removed, again.unchanged, again.verified) == (40, 210, True)
    assert set(emulators.batch.members("target-runs")) == set(numbers[40:])
