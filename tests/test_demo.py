"""The demo, as the command line runs it: a part of the contacts through Dexatel's API with its
faults, the rest seeded into the emulator, all of them migrated to Batch and verified."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from audiencekit.cli._app import build_app

# Batch at full speed (see the fixture): the full demo at its defaults, Batch's pace included,
# is tests/workflows/test_cli.py::test_the_installed_command_runs_the_full_demo.
pytestmark = pytest.mark.usefixtures("batch_unpaced")


def test_the_demo_adds_some_contacts_through_the_api_and_seeds_the_rest() -> None:
    result = CliRunner().invoke(
        build_app(), ["demo", "--contacts", "900", "--api-contacts", "300", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["dexatel_added"], summary["dexatel_seeded"]) == (300, 600)
    assert summary["dexatel_contact_calls"] >= 300  # one request a contact, and its retries
    assert summary["dexatel_contacts"] == summary["batch_members"] == 900
    assert summary["faults_survived"] > 0
    assert summary["verified"] is True


def test_the_demo_text_says_which_contacts_were_seeded() -> None:
    result = CliRunner().invoke(build_app(), ["demo", "--contacts", "400", "--api-contacts", "100"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.split()[:5] == ["Dexatel", "contacts", "added", "(API)", "100"] for line in lines
    )
    assert any(line.split()[:4] == ["Dexatel", "contacts", "seeded", "300"] for line in lines)
    assert any(line.split() == ["verified", "identical", "yes"] for line in lines)
