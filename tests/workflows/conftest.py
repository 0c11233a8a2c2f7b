from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore

from ..conftest import Connect


@pytest.fixture
def batch(connect: Connect) -> BatchBackend:
    return connect(BatchBackend)


@pytest.fixture
def dexatel(connect: Connect) -> DexatelBackend:
    return connect(DexatelBackend, concurrency=16)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite3") as store:
        yield store
