from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from audiencekit.providers.batch import BatchBackend

from ..conftest import Connect

MakeBackend = Callable[..., BatchBackend]


@pytest.fixture
def make_backend(connect: Connect) -> MakeBackend:
    return partial(connect, BatchBackend)


@pytest.fixture
def backend(connect: Connect) -> BatchBackend:
    return connect(BatchBackend)
