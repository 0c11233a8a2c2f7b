"""Fixtures for tests that run the code under test in child processes against the emulators:
Batch applying each write soon after it arrives (as the real service does, so that what a
killed child had accepted gets applied), and the environment that points a child at them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import audiencekit
from audiencekit.testing import EmulatorServer

__all__ = ["env", "server"]


@pytest.fixture
def server(audiencekit_emulators: EmulatorServer) -> EmulatorServer:
    audiencekit_emulators.batch.config.index_polls = 0
    audiencekit_emulators.batch.config.index_delay = 0.05
    return audiencekit_emulators


@pytest.fixture
def env(server: EmulatorServer) -> dict[str, str]:
    ends = server.endpoints
    here = str(Path(audiencekit.__file__).parents[1])  # the children run the code under test
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        "BATCH_API_KEY": ends.batch_key,
        "BATCH_PROJECT_KEY": ends.batch_project,
        "BATCH_BASE_URL": ends.batch_url,
        "DEXATEL_API_KEY": ends.dexatel_key,
        "DEXATEL_BASE_URL": ends.dexatel_url,
    }
