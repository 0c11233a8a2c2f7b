"""The store conformance suite, run on the stores audiencekit ships."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from audiencekit.state import StateStore
from audiencekit.testing.store_contract import StoreContract

#: The schema audiencekit 0.1 wrote (no user_version, entries keyed by the provider's name).
SQLITE_0_1 = """
CREATE TABLE pushed (scope TEXT NOT NULL, audience TEXT NOT NULL, member TEXT NOT NULL,
    fingerprint TEXT NOT NULL, PRIMARY KEY (scope, audience, member)) WITHOUT ROWID;
CREATE TABLE checkpoints (run TEXT PRIMARY KEY, data TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
"""


def postgres_is_built() -> bool:
    """Whether this build has a PostgreSQL store (and its driver) to run the suite on."""
    try:
        from audiencekit.state.postgres import PostgresStateStore
    except ImportError:  # the postgres extra is not installed
        return False
    return "iter_entries" in vars(PostgresStateStore)


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_location(self, tmp_path: Path) -> str:
        return str(tmp_path / "state.sqlite3")

    def create_previous_store(
        self, location: str, scope: str, audience: str, settled: Mapping[str, str]
    ) -> None:
        provider = scope.partition("/")[0]
        db = sqlite3.connect(location)
        with db:
            db.executescript(SQLITE_0_1)
            db.executemany(
                "INSERT INTO pushed VALUES (?, ?, ?, ?)",
                [(provider, audience, k, fp) for k, fp in settled.items()],
            )
        db.close()

    @pytest.mark.xfail(strict=True, reason="release_lease deletes the row, and its epoch")
    def test_the_epoch_grows_when_a_released_lease_is_taken_by_another_owner(
        self, connect: Callable[[], StateStore]
    ) -> None:
        super().test_the_epoch_grows_when_a_released_lease_is_taken_by_another_owner(connect)


@pytest.mark.skipif(not postgres_is_built(), reason="no PostgreSQL store in this build")
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_location(self, postgres_url: str) -> str:
        return postgres_url
