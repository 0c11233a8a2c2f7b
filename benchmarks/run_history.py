"""How long the state store takes to record a run with many failed ids (issue 25, item 3): one
``record_run`` of N outcomes (adds with a few attributes), on SQLite and on PostgreSQL (a
throwaway server), best of a few tries, and how long reading them back page by page takes.

``python -m benchmarks.run_history [N] [TRIES]`` (defaults: 100,000 and 3). The target: well
under two seconds for 100,000 ids on either store (the writes are one executemany / one COPY).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from audiencekit.state import RunOutcome, RunRecord, SqliteStateStore, StateStore, new_run_id
from audiencekit.testing._postgres import PostgresServer, ServerUnavailable


def outcomes(n: int) -> Iterator[RunOutcome]:
    for i in range(n):
        yield RunOutcome(f"user-{i:07d}", "add", "failed", "BadRequestError 400 [INVALID]",
                         {"plan": "gold", "rank": i, "vip": i % 2 == 0})  # fmt: skip


def timed(store: StateStore, n: int, tries: int) -> tuple[float, float]:
    """The best time to record a run of ``n`` outcomes, and to read them back."""
    best_write = best_read = float("inf")
    for _ in range(tries):
        start = datetime.now(timezone.utc)
        record = RunRecord(
            id=new_run_id(), kind="sync", provider="batch", scope="batch/bench",
            audience="bench", started_at=start, ended_at=start + timedelta(seconds=1),
            outcome="partial", counts={"applied": 0, "failed": n, "unknown": 0},
        )  # fmt: skip
        rows = list(outcomes(n))  # built before the clock starts: the store's time alone
        began = time.perf_counter()
        store.record_run(record, rows)
        best_write = min(best_write, time.perf_counter() - began)
        began = time.perf_counter()
        read = sum(1 for _ in store.run_outcomes(record.id))
        best_read = min(best_read, time.perf_counter() - began)
        assert read == n, read
    return best_write, best_read


def report(name: str, n: int, tries: int, opened: Callable[[], StateStore]) -> None:
    with opened() as store:
        write, read = timed(store, n, tries)
    print(f"{name:<12} record {n:,} outcomes: {write:6.3f} s   read back: {read:6.3f} s")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    tries = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as folder:
        report("SQLite", n, tries, lambda: SqliteStateStore(Path(folder) / "s.sqlite3"))
    try:
        server = PostgresServer()
    except ServerUnavailable as exc:
        print(f"PostgreSQL   skipped: {exc}")
        return
    try:
        from audiencekit.state.postgres import PostgresStateStore

        report("PostgreSQL", n, tries, lambda: PostgresStateStore(server.url))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
