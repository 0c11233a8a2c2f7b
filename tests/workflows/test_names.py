"""An audience is named by id or by name on every provider, in every workflow, the Mirror and
the command line; Dexatel, whose ids are UUIDs, answers a name with 1302 and must still work."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from audiencekit import (
    AudienceWriter,
    ConfigurationError,
    Member,
    Mirror,
    NotFoundError,
)
from audiencekit.cli import main
from audiencekit.core.resolve import resolve_audience
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore
from audiencekit.testing import EmulatorServer, FakeBackend
from audiencekit.workflows import migrate, sync

from .test_cli import env  # noqa: F401  (the command line's environment fixture)

pytestmark = pytest.mark.anyio

NUMBERS = [f"+37477{i:06d}" for i in range(150)]


def held(server: EmulatorServer, name: str) -> dict[str, dict[str, str]]:
    """What the Dexatel emulator holds in the audience called ``name``: number -> fields."""
    for account in server.dexatel.snapshot().values():
        for audience in account["audiences"]:
            if audience["name"] == name:
                return {
                    c["number"]: {k: c[k] for k in ("first_name",) if c.get(k) is not None}
                    for c in audience["contacts"]
                }
    raise KeyError(name)


async def test_dexatel_is_a_migrate_target_by_name(
    dexatel: DexatelBackend, emulators: EmulatorServer, state: StateStore
) -> None:
    source = await dexatel.create_audience("source", channel="VIBER")
    members = [Member(n, attributes={"first_name": f"n{i}"}) for i, n in enumerate(NUMBERS)]
    await dexatel.add_members(source.id, members)

    with pytest.raises(NotFoundError, match="no audience with the id or name 'copy'"):
        await migrate(dexatel, "source", dexatel, "copy")  # by name, not created without create
    report = await migrate(dexatel, "source", dexatel, "copy", create=True, state=state)
    assert report.verified
    assert held(emulators, "copy") == {m.id: dict(m.attributes) for m in members}
    copy = await dexatel.get_audience(report.target_audience)
    assert (copy.name, copy.channel.value if copy.channel else None) == ("copy", "VIBER")

    again = await migrate(dexatel, "source", dexatel, "copy", create=True, state=state)
    assert again.target_audience == copy.id  # found by name, not created twice
    assert len([a async for a in dexatel.list_audiences()]) == 2


async def test_dexatel_inside_a_mirror_by_name(
    dexatel: DexatelBackend, batch: BatchBackend, emulators: EmulatorServer
) -> None:
    await dexatel.create_audience("vip", channel="SMS")
    await batch.create_audience("vip")
    mirror = Mirror({"dexatel": dexatel, "batch": batch})
    members = [Member(n) for n in NUMBERS[:20]]
    result = await mirror.add_members("vip", members)
    assert result.ok
    assert set(held(emulators, "vip")) == {m.id for m in members}
    assert set(emulators.batch.members("vip")) == {m.id for m in members}
    await mirror.remove_members("vip", [NUMBERS[0]])
    assert NUMBERS[0] not in held(emulators, "vip")
    assert NUMBERS[0] not in emulators.batch.members("vip")
    shown = await mirror.get_audience("vip")
    assert shown.size == 19


async def test_sync_and_the_writer_take_a_dexatel_name(
    dexatel: DexatelBackend, emulators: EmulatorServer
) -> None:
    report = await sync(dexatel, "synced", [Member(n) for n in NUMBERS[:5]], create=True,
                        channel="SMS")  # fmt: skip
    assert report.added == 5
    assert set(held(emulators, "synced")) == set(NUMBERS[:5])
    async with AudienceWriter(dexatel, "synced") as writer:
        await writer.remove(NUMBERS[0])
    assert set(held(emulators, "synced")) == set(NUMBERS[1:5])


async def test_a_name_two_audiences_share_must_be_given_by_id() -> None:
    fake = FakeBackend()
    first = await fake.create_audience("twin")
    second = await fake.create_audience("other")
    await fake.rename_audience(second.id, "twin")  # as another tool may leave an account
    with pytest.raises(ConfigurationError, match="2 audiences named 'twin'"):
        await resolve_audience(fake, "twin")
    assert (await resolve_audience(fake, second.id))[0].id == second.id
    assert first.id != second.id


def test_command_line_migrates_into_a_new_dexatel_audience_by_name(
    env: EmulatorServer,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    assert main(["--json", "audiences", "create", "src", "--provider", "dexatel",
                 "--channel", "SMS"]) == 0  # fmt: skip
    source_id = json.loads(capsys.readouterr().out)["id"]
    env.dexatel.seed_contacts(source_id, ({"number": n} for n in NUMBERS))
    code = main(["--json", "migrate", "--from", "dexatel:src", "--to", "dexatel:vip-copy",
                 "--create", "--state", str(tmp_path / "s.sqlite3")])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["verified"] is True
    assert set(held(env, "vip-copy")) == set(NUMBERS)
    assert main(["--json", "audiences", "show", "vip-copy", "--provider", "dexatel"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == len(NUMBERS)


async def test_two_runs_creating_one_audience_at_once_both_find_it(
    batch: BatchBackend, emulators: EmulatorServer
) -> None:
    found: list[tuple[str, bool]] = []

    async def create() -> None:
        audience, created = await resolve_audience(batch, "raced", create=True)
        found.append((audience.id, created))

    async with anyio.create_task_group() as tg:
        tg.start_soon(create)
        tg.start_soon(create)
    assert sorted(found) == [("raced", False), ("raced", True)]
