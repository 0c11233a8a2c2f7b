"""The store conformance suite, run on the stores audiencekit ships."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from audiencekit.state import Entry, SqliteStateStore, StateStore
from audiencekit.state.base import lease_owner
from audiencekit.testing.store_contract import DictStore, StoreContract, a_run

#: The schema audiencekit 0.1 wrote (no user_version, entries keyed by the provider's name).
SQLITE_0_1 = """
CREATE TABLE pushed (scope TEXT NOT NULL, audience TEXT NOT NULL, member TEXT NOT NULL,
    fingerprint TEXT NOT NULL, PRIMARY KEY (scope, audience, member)) WITHOUT ROWID;
CREATE TABLE checkpoints (run TEXT PRIMARY KEY, data TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
"""


#: The schema audiencekit 0.2 wrote (user_version 3: entries with status and handle, leases
#: with an epoch; no run history).
SQLITE_0_2 = """
CREATE TABLE pushed (scope TEXT NOT NULL, audience TEXT NOT NULL, member TEXT NOT NULL,
    fingerprint TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'settled', handle TEXT,
    PRIMARY KEY (scope, audience, member)) WITHOUT ROWID;
CREATE TABLE checkpoints (run TEXT PRIMARY KEY, data TEXT NOT NULL,
    updated TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1);
PRAGMA user_version = 3;
"""


#: The stores of the reference store's tests, by location (one per test).
DICT_STORES: dict[str, DictStore] = {}


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

    def test_a_store_of_audiencekit_0_2_opens_keeps_everything_and_records_runs(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "0.2.sqlite3"
        db = sqlite3.connect(path)
        with db:
            db.executescript(SQLITE_0_2)
            db.execute("INSERT INTO pushed VALUES ('mine', 'a', 'u1', 'f1', 'accepted', 'h1')")
            db.execute("INSERT INTO leases VALUES ('k', 'elsewhere:1:t', 9e99, 7)")
        db.close()
        with SqliteStateStore(path) as store:
            # A scope without a "/" (a caller's own) is not taken for 0.1's; leases are kept.
            assert store.entries("mine", "a") == {"u1": Entry("f1", "accepted", "h1")}
            assert store.acquire_lease("k", lease_owner("me"), 30).epoch == 7
            record = a_run(scope="mine")
            store.record_run(record, [("u1", "add", "failed", "X", {"plan": "gold"})])
        with SqliteStateStore(path) as store:
            assert store.runs("mine") == [record]
            assert [o.attributes for o in store.run_outcomes(record.id)] == [{"plan": "gold"}]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone() == (4,)
        db.close()

    def test_a_store_killed_in_a_checkpoint_opens_from_its_wal(self, tmp_path: Path) -> None:
        """A checkpoint (closing the last client runs one) writes the file's first page, which
        counts the pages, first: killed then, the file is shorter than it says, and whole
        with its WAL."""
        path = tmp_path / "state.sqlite3"
        killed, twin = tmp_path / "killed.sqlite3", tmp_path / "twin.sqlite3"
        with SqliteStateStore(path) as store:
            written = max(path.stat().st_size, 4_096)  # and the first page, written first
            store.record("batch/a", "spring", present={f"u{i}": "f" for i in range(2_000)})
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            db.close()
            assert path.stat().st_size > written
            for copy in (killed, twin):
                shutil.copy(f"{path}-wal", f"{copy}-wal")
                copy.write_bytes(path.read_bytes()[:written])
        with sqlite3.connect(twin) as db:  # SQLite reads it whole (and repairs it on closing)
            assert db.execute("SELECT count(*) FROM pushed").fetchone() == (2_000,)
        db.close()
        with SqliteStateStore(killed) as store:
            assert store.entries("batch/a", "spring")["u7"] == Entry("f", "settled")


class TestDictStore(StoreContract):
    opener = None  # it lives in this process

    @pytest.fixture
    def store_location(self, tmp_path: Path) -> str:
        return str(tmp_path)  # a new name for each test

    def open_store(self, location: str) -> StateStore:
        return DictStore(of=DICT_STORES.setdefault(location, DictStore()))


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_location(self, postgres_url: str) -> str:
        return postgres_url

    def create_previous_store(
        self, location: str, scope: str, audience: str, settled: Mapping[str, str]
    ) -> None:
        """Schema 1 (audiencekit 0.2): entries, checkpoints and leases, no run history."""
        import psycopg

        from audiencekit.state import postgres

        with psycopg.connect(location, autocommit=True) as db, db.transaction():
            db.execute(postgres._VERSION_TABLE)
            db.execute(postgres._UPGRADES[0])
            db.execute("INSERT INTO audiencekit_schema (version) VALUES (1)")
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO audiencekit_entries VALUES (%s, %s, %s, %s, 'settled', NULL)",
                    [(scope, audience, k, fp) for k, fp in settled.items()],
                )
