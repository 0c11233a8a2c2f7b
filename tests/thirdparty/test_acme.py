"""The proof of the provider seam: Acme, defined only in ``tests/thirdparty/acme.py`` against the
public extension API, registers with ``register_provider`` and then works everywhere a built-in
provider does: the contract suite, ``EmulatorServer``, ``sync``, ``migrate``, a ``Mirror``, the
command line and ``open_backend`` (options from its environment variables)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from audiencekit import Member, open_backend
from audiencekit.cli import main
from audiencekit.options import PollPolicy
from audiencekit.providers import (
    get_provider,
    provider_names,
)
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import SqliteStateStore, scope_of
from audiencekit.testing import EmulatorServer, FakeBackend
from audiencekit.testing.contract import BackendContract, Observe
from audiencekit.workflows import migrate, sync
from audiencekit.workflows.mirror import Mirror
from audiencekit.workflows.writer import AudienceWriter

from .acme import AcmeBackend, AcmeEmulator


def held(acme: AcmeEmulator) -> dict[str, dict[str, dict[str, Any]]]:
    """What Acme holds, by list name."""
    return {v["name"]: v["members"] for v in acme.snapshot().values()}


class TestAcmeContract(BackendContract):
    @pytest.fixture
    def observe(self, acme: AcmeEmulator) -> Observe:
        async def observe(audience_id: str) -> Mapping[str, Mapping[str, Any]]:
            return acme.members(audience_id)

        return observe


class TestMirrorContract(BackendContract):
    """A Mirror of Acme and the fake keeps the contract too; each write reaches both."""

    @pytest.fixture
    async def backend(self, backend: AcmeBackend) -> AsyncIterator[Mirror]:
        async with Mirror({"acme": backend, "fake": FakeBackend(chunk_size=3)}) as mirror:
            yield mirror

    @pytest.fixture
    def observe(self, backend: Mirror, acme: AcmeEmulator) -> Observe:
        async def observe(audience_id: str) -> Mapping[str, Mapping[str, Any]]:
            ids = (await backend.get_audience(audience_id)).extra["ids"]
            on_acme = acme.members(ids["acme"])
            fake = backend.backends["fake"]
            assert isinstance(fake, FakeBackend)
            assert set(fake.members(ids["fake"])) == set(on_acme)
            return on_acme

        return observe


pytestmark = pytest.mark.anyio


def test_the_registry_knows_it_only_once_registered(acme_server: EmulatorServer) -> None:
    assert "acme" in provider_names()
    assert get_provider("acme").env["base_url"] == "ACME_BASE_URL"
    assert set(acme_server.endpoints) >= {"acme", "batch", "dexatel"}
    assert acme_server.endpoints["acme"].url.endswith("/v2")


async def test_open_backend_reads_its_environment(
    acme_server: EmulatorServer, acme: AcmeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = acme_server.endpoints["acme"].options
    monkeypatch.setenv("ACME_API_KEY", options["api_key"])
    monkeypatch.setenv("ACME_BASE_URL", options["base_url"])
    async with open_backend("acme") as backend:
        await backend.create_audience("from-env")
        # A backend on a ProviderClient gets its repr (no key) and aclose from the seam.
        assert repr(backend) == f"<AcmeBackend {options['base_url']}>"
        closed: list[bool] = []
        original = backend.client.aclose  # type: ignore[attr-defined]

        async def spy() -> None:
            closed.append(True)
            await original()

        backend.client.aclose = spy  # type: ignore[attr-defined]
    assert held(acme) == {"from-env": {}}
    assert closed == [True]


async def test_sync_keys_by_the_canonical_id_and_sends_nothing_the_second_time(
    backend: AcmeBackend, acme: AcmeEmulator, tmp_path: Path
) -> None:
    desired = [Member("Alice", attributes={"plan": "gold"}), Member("bob"), Member("ALICE")]
    with SqliteStateStore(tmp_path / "s.sqlite3") as state:
        first = await sync(backend, "crew", desired, create=True, state=state)
        assert first.added == 2
        assert held(acme) == {"crew": {"alice": {}, "bob": {}}}  # the last of "alice" won
        jobs = len(acme.jobs)
        second = await sync(backend, "crew", desired, create=True, state=state)
    assert (second.sent, second.unchanged) == (0, 2)
    assert len(acme.jobs) == jobs


async def test_migrate_to_batch_and_from_another_provider(
    backend: AcmeBackend, acme: AcmeEmulator, acme_server: EmulatorServer, tmp_path: Path
) -> None:
    members = [Member(f"user-{i:04d}", attributes={"n": i}) for i in range(1_234)]
    await sync(backend, "source", members, create=True)
    batch = BatchBackend(
        **acme_server.endpoints["batch"].options,
        rate_limit=None,
        poll=PollPolicy(max_wait=30, interval=0.01),
    )
    acme_server.batch.config.index_polls = 1
    async with batch, FakeBackend() as fake:
        with SqliteStateStore(tmp_path / "s.sqlite3") as state:
            there = await migrate(backend, "source", batch, "copy", create=True, state=state)
        assert there.verified
        assert acme_server.batch.members("copy") == {m.id: dict(m.attributes) for m in members}
        made = await fake.create_audience("elsewhere")
        await fake.add_members(made.id, [Member("Mixed-Case", attributes={"a": 1}), Member("b")])
        back = await migrate(fake, made.id, backend, "back", create=True)
    assert back.verified
    assert held(acme)["back"] == {"mixed-case": {"a": 1}, "b": {}}


async def test_an_audience_writer_on_acme_with_a_state_store(
    backend: AcmeBackend, acme: AcmeEmulator, tmp_path: Path
) -> None:
    """Many tasks writing through one AudienceWriter, by the list's name, with the journal."""
    made = await backend.create_audience("svc")
    with SqliteStateStore(tmp_path / "s.sqlite3") as state:
        async with (
            AudienceWriter(backend, "svc", max_batch=300, max_delay=0.05, state=state) as writer,
            anyio.create_task_group() as tg,
        ):  # fmt: skip
            for task in range(5):

                async def work(task: int = task) -> None:
                    for i in range(200):
                        await writer.add(Member(f"T{task}-{i}"))
                    await writer.remove(f"t{task}-0")

                tg.start_soon(work)
        entries = state.entries(scope_of(backend), made.id)
    expected = {f"t{task}-{i}" for task in range(5) for i in range(1, 200)}
    # The journal holds what the list holds, by canonical (lowercased) id, all confirmed.
    assert set(entries) == set(held(acme)["svc"]) == expected
    assert all(entry.settled for entry in entries.values())


async def test_a_refused_job_is_split_down_to_the_ids_refused(
    backend: AcmeBackend, acme: AcmeEmulator
) -> None:
    """Acme refuses a job whole for one id it will not take (a rule the client cannot know):
    the engine, not the provider, narrows the 400 down, and only that id fails."""
    audience = await backend.create_audience("split")
    acme.refused = {"m17"}
    result = await backend.add_members(
        audience.id, [Member(f"m{i}") for i in range(40)], raise_on_failure=False
    )
    assert set(result.failed) == {"m17"}
    assert result.applied == 39
    assert set(acme.members(audience.id)) == {f"m{i}" for i in range(40)} - {"m17"}


def test_the_command_line_lists_and_drives_it(
    acme_server: EmulatorServer,
    acme: AcmeEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    batch_unpaced: None,
) -> None:
    options = acme_server.endpoints["acme"].options
    monkeypatch.setenv("ACME_API_KEY", options["api_key"])
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    batch = acme_server.endpoints["batch"]
    monkeypatch.setenv("BATCH_API_KEY", batch.options["api_key"])
    monkeypatch.setenv("BATCH_PROJECT_KEY", batch.options["project_key"])

    def run(*argv: str) -> tuple[int, Any]:
        code = main(["--json", "--acme-url", options["base_url"], "--batch-url", batch.url, *argv])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else None

    code, made = run("audiences", "create", "cli", "--provider", "acme")
    assert code == 0
    assert made["provider"] == "acme"
    members = tmp_path / "m.csv"
    members.write_text("id,plan\nU1,gold\nu2,\n", encoding="utf-8")
    code, added = run("members", "add", str(members), "--provider", "acme", "--audience", "cli")
    assert (code, added["applied"]) == (0, 2)
    assert held(acme)["cli"] == {"u1": {"plan": "gold"}, "u2": {}}
    code, report = run(
        "migrate", "--from", "acme:cli", "--to", "batch:from_acme", "--create",
        "--state", str(tmp_path / "s.sqlite3"),
    )  # fmt: skip
    assert code == 0
    assert report["verified"] is True
    assert set(acme_server.batch.members("from_acme")) == {"u1", "u2"}
