"""Keeps the shared rate budget out of the user's folder: a test module that imports
``private_budget`` (or a conftest) gives each test a budget file of its own, in a temporary
folder, through ``AUDIENCEKIT_SHARED_BUDGET`` (so child processes use it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from audiencekit._rate import BUDGET_ENV


@pytest.fixture(autouse=True)
def private_budget(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The budget file of this test (not made until a paced request needs it)."""
    path = tmp_path_factory.mktemp("budget") / "budget.sqlite3"
    monkeypatch.setenv(BUDGET_ENV, str(path))
    return path
