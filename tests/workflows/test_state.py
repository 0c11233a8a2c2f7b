"""The SQLite state store: records, checkpoints, persistence, and no half-written state."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from audiencekit.models import Url
from audiencekit.state import StateStore, fingerprint


def test_fingerprints_are_stable_and_typed() -> None:
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    a = fingerprint({"x": 1, "y": "a", "d": when, "u": Url("https://e.com"), "l": ["p"]})
    b = fingerprint({"l": ["p"], "u": Url("https://e.com"), "d": when, "y": "a", "x": 1})
    assert a == b
    assert fingerprint({"u": Url("https://e.com")}) != fingerprint({"u": "https://e.com"})
    assert fingerprint({"x": 1}) != fingerprint({"x": "1"})
    assert fingerprint({}) == fingerprint({})


def test_records_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with StateStore(path) as store:
        store.record("batch", "aud", present={"a": "f1", "b": "f2", "c": "f3"})
        store.record("batch", "aud", present={"a": "f9"}, absent=["b"])
        store.record("batch", "other", present={"a": "zz"})
        store.save_checkpoint("run1", {"cursor": 10, "pending": {"t": {"ids": ["a"]}}})
    with StateStore(path) as store:
        assert store.pushed("batch", "aud") == {"a": "f9", "c": "f3"}
        assert store.count("batch", "other") == 1
        assert store.checkpoint("run1") == {"cursor": 10, "pending": {"t": {"ids": ["a"]}}}
        store.clear_checkpoint("run1")
        assert store.checkpoint("run1") is None
        store.forget_audience("batch", "aud")
        assert store.pushed("batch", "aud") == {}


def test_a_failing_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        store.record("batch", "aud", present={"keep": "f"})

        def rows() -> Iterator[tuple[str, str]]:
            yield ("new1", "f")
            yield ("new2", "f")
            raise RuntimeError("crash in the middle of a write")

        with pytest.raises(RuntimeError):
            store.record("batch", "aud", present=rows(), absent=["keep"])
        assert store.pushed("batch", "aud") == {"keep": "f"}


def _open_and_write(path: str, barrier: Any, failures: Any) -> None:
    barrier.wait()
    try:
        with StateStore(path) as store:
            store.intend("batch", "a", [(str(os.getpid()), "f")])
    except sqlite3.OperationalError:
        failures.value += 1


def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL answers "database is locked" at once (no busy wait) while
    # another process switches it too; the store tries again.
    context = multiprocessing.get_context("fork")
    failures = context.Value("i", 0)
    for round_ in range(40):
        path = str(tmp_path / f"s{round_}.sqlite3")
        barrier = context.Barrier(4)
        children = [
            context.Process(target=_open_and_write, args=(path, barrier, failures))
            for _ in range(4)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
        with StateStore(path) as store:
            assert len(store.entries("batch", "a")) == 4
    assert failures.value == 0
