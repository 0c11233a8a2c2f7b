from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from audiencekit.providers.dexatel import DexatelBackend

from ..conftest import Connect

MakeBackend = Callable[..., DexatelBackend]


@pytest.fixture
def make_backend(connect: Connect) -> MakeBackend:
    return partial(connect, DexatelBackend)


@pytest.fixture
def backend(connect: Connect) -> DexatelBackend:
    return connect(DexatelBackend)
