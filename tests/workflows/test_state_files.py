"""A state file that cannot be used is a typed error naming it and why, and it is left exactly
as it was (issue: 7 of 10 such files leaked raw sqlite3 errors, some were written to)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from audiencekit.errors import (
    ConfigurationError,
    StateStoreAccessError,
    StateStoreCorruptError,
    StateStoreError,
    StateStoreLockedError,
    StateStoreVersionError,
)
from audiencekit.state import SqliteStateStore, StateStore

ROOT = os.geteuid() == 0


def digest(path: Path) -> str:
    """The bytes at ``path`` (and its -wal / -shm files, which must not appear either)."""
    parts = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.is_file()]
    return "|".join(f"{p.name}:{hashlib.sha256(p.read_bytes()).hexdigest()}" for p in parts)


def a_store(path: Path) -> Path:
    with StateStore(path) as store:
        store.record("batch/x", "a", present={f"u{i}": "f" for i in range(2_000)})
    return path


def random_bytes(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def truncated(path: Path) -> Path:
    a_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file(path: Path) -> Path:
    path.write_text("id,plan\nu1,gold\n")
    return path


def newer_schema(path: Path) -> Path:
    a_store(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    return path


def foreign_database(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.close()
    return path


CASES: dict[str, tuple[Callable[[Path], Path], type[StateStoreError], str]] = {
    "random bytes": (random_bytes, StateStoreCorruptError, "not a SQLite database"),
    "a truncated store": (truncated, StateStoreCorruptError, "cut short"),
    "a text file": (text_file, StateStoreCorruptError, "not a SQLite database"),
    "a newer schema": (newer_schema, StateStoreVersionError, "newer audiencekit"),
    "another program's database": (foreign_database, StateStoreCorruptError, "another program"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_file_is_a_typed_error_and_is_left_as_it_was(tmp_path: Path, case: str) -> None:
    make, error, reason = CASES[case]
    path = make(tmp_path / "state.sqlite3")
    before = digest(path)
    with pytest.raises(error, match=reason) as caught:
        StateStore(path)
    assert caught.value.location == str(path)
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, sqlite3.Error)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite3"]  # no -wal, no -shm


def test_a_folder_in_the_files_place_or_a_missing_folder_is_an_access_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.sqlite3").mkdir()
    with pytest.raises(StateStoreAccessError, match="folder, not a file"):
        StateStore(tmp_path / "state.sqlite3")
    with pytest.raises(StateStoreAccessError, match="does not exist"):
        StateStore(tmp_path / "missing" / "state.sqlite3")
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(ROOT, reason="root writes read-only files and folders")
def test_a_read_only_file_or_folder_is_an_access_error(tmp_path: Path) -> None:
    path = a_store(tmp_path / "state.sqlite3")
    before = digest(path)
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StateStoreAccessError):
            StateStore(path)
        with pytest.raises(StateStoreAccessError):
            StateStore(tmp_path / "new.sqlite3")
    finally:
        tmp_path.chmod(0o755)
        path.chmod(0o644)
    assert digest(path) == before


HOLD_LOCKED = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("wal", [True, False], ids=["wal", "rollback-journal"])
def test_a_file_held_locked_past_the_timeout_is_a_locked_error(tmp_path: Path, wal: bool) -> None:
    path = a_store(tmp_path / "state.sqlite3")
    if not wal:
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=DELETE")
        db.close()
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCKED, str(path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            before = digest(path)
            started = time.monotonic()
            with pytest.raises(StateStoreLockedError, match=r"locked for more than 0\.5 s"):
                SqliteStateStore(path, timeout=0.5)
            assert time.monotonic() - started < 20  # it waited for the timeout, not forever
            assert digest(path) == before
        finally:
            holder.kill()
    with SqliteStateStore(path) as store:  # once the other process is gone, it opens
        assert store.count("batch/x", "a") == 2_000


def test_a_store_that_breaks_mid_run_raises_a_state_store_error(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    store.close()
    with pytest.raises(StateStoreError) as caught:
        store.record("batch/x", "a", present={"u1": "f"})
    assert not isinstance(caught.value, sqlite3.Error)


def test_an_empty_file_is_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    path.touch()  # as tempfile.mkstemp leaves it
    with StateStore(path) as store:
        store.record("batch/x", "a", present={"u1": "f"})
    with StateStore(path) as store:
        assert store.pushed("batch/x", "a") == {"u1": "f"}


@pytest.mark.parametrize("url", ["ftp://user:hunter2@host/db", "mysql://user:hunter2@h/db"])
def test_a_url_this_version_cannot_open_is_refused_without_its_password(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        StateStore.open(url)
    assert "hunter2" not in str(caught.value)
    assert "user:***@" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no file named after the URL
