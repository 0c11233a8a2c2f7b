"""The README's "Adding a provider" example, run as printed against the Acme emulator: the
example is a promise that this much code makes a working provider."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from audiencekit import Member, Remove
from audiencekit.providers import Provider
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import sync

from .acme import AcmeEmulator

README = Path(__file__).parents[2] / "README.md"

pytestmark = pytest.mark.anyio


def readme_adapter() -> dict[str, Any]:
    """The names the README's adapter defines, from its code block as printed."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (code,) = [block for block in blocks if block.startswith("# acme.py")]
    namespace: dict[str, Any] = {"__name__": "acme_readme"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


async def test_the_readme_adapter_works_as_printed(
    acme_server: EmulatorServer, acme: AcmeEmulator
) -> None:
    adapter = readme_adapter()
    provider = adapter["ACME"]
    assert isinstance(provider, Provider)
    assert provider.env == {"api_key": "ACME_API_KEY", "base_url": "ACME_BASE_URL"}
    acme.polls_to_apply = 1  # each job applied once it is viewed
    async with provider.build(**acme_server.endpoints["acme"].options) as backend:
        audience = await backend.create_audience("readme")
        members = [Member(f"u{i}", attributes={"plan": "gold"}) for i in range(1_234)]
        sent = await backend.add_members(audience.id, members, wait=False)
        assert sent.pending_count == 1_234
        assert acme.members(audience.id) == {}
        done = await backend.wait(sent)
        assert (done.ok, done.applied) == (True, 1_234)
        assert len(acme.members(audience.id)) == 1_234
        await backend.apply(audience.id, [Remove("u0"), Remove("absent")])
        report = await sync(backend, "readme", members[:10])
        assert (report.added, report.removed, report.unchanged) == (1, 1_224, 9)
        listed = {m.id async for m in backend.iter_members(audience.id)}
        assert listed == {f"u{i}" for i in range(10)} == set(acme.members(audience.id))
        assert [a.name async for a in backend.list_audiences()] == ["readme"]
        await backend.delete_audience(audience.id)
    assert acme.lists == {}
