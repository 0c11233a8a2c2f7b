"""The PostgreSQL state store against a real server: the journal, leases and their fencing on
the database's clock, its schema, and errors that never repeat the URL's password."""

from __future__ import annotations

import multiprocessing
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from audiencekit import ConfigurationError, Member
from audiencekit.core.urls import redacted
from audiencekit.errors import (
    FencingError,
    StateStoreAccessError,
    StateStoreConnectionError,
    StateStoreError,
    StateStoreVersionError,
)
from audiencekit.providers.batch import BatchBackend
from audiencekit.state import Entry, Lease, SqliteStateStore, StateStore, scope_of
from audiencekit.state.postgres import SCHEMA_VERSION, PostgresStateStore
from audiencekit.testing import EmulatorServer
from audiencekit.workflows import sync

from ..conftest import Connect
from ..postgres_server import own_server

SCOPE = "batch/acct"


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStateStore]:
    with PostgresStateStore(postgres_url) as opened:
        yield opened


def database_now(url: str) -> datetime:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def lease_expiry(url: str, key: str) -> datetime:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT expires FROM audiencekit_leases WHERE key = %s", (key,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def wait_for_database_clock(url: str, moment: datetime) -> None:
    """Wait until the database's clock has passed ``moment`` (whatever this host's says)."""
    deadline = time.monotonic() + 30
    while database_now(url) <= moment:
        assert time.monotonic() < deadline, "the database's clock did not move"
        time.sleep(0.05)


# -- the journal --------------------------------------------------------------------------------


def test_the_journal_round_trips_every_status(store: PostgresStateStore) -> None:
    store.intend(SCOPE, "a", [("u1", "f1"), ("u2", "f2"), ("u3", "f3"), ("u4", "")])
    store.accept(SCOPE, "a", "token-1", ["u1", "u2", "missing"])
    store.mark(SCOPE, "a", "unknown", ["u2"])
    store.mark(SCOPE, "a", "failed", ["u3"])
    store.record(SCOPE, "a", present={"u1": "f1", "u5": "f5"}, absent=["u4"])
    store.accept(SCOPE, "a", "token-2", ["u1"])  # settled entries are left alone
    assert store.entries(SCOPE, "a") == {
        "u1": Entry("f1", "settled"),
        "u2": Entry("f2", "unknown", "token-1"),
        "u3": Entry("f3", "failed"),
        "u5": Entry("f5", "settled"),
    }
    assert store.pushed(SCOPE, "a") == {"u1": "f1", "u5": "f5"}
    assert store.count(SCOPE, "a") == 2
    assert store.entries("batch/other", "a") == {}  # another account shares no row
    with pytest.raises(ValueError, match="mark"):
        store.mark(SCOPE, "a", "settled", ["u2"])

    store.forget_audience(SCOPE, "a")
    assert store.entries(SCOPE, "a") == {}
    assert store.claim_legacy("batch", SCOPE) == 0


def test_the_last_write_of_an_id_wins_and_a_failed_write_changes_nothing(
    store: PostgresStateStore,
) -> None:
    store.intend(SCOPE, "a", [("u1", "old"), ("u1", "new")])
    assert store.entries(SCOPE, "a") == {"u1": Entry("new", "intended")}

    def rows() -> Iterator[tuple[str, str]]:
        yield ("u2", "f")
        raise RuntimeError("crash in the middle of a write")

    with pytest.raises(RuntimeError):
        store.record(SCOPE, "a", present=rows(), absent=["u1"])
    assert store.entries(SCOPE, "a") == {"u1": Entry("new", "intended")}


def test_entries_come_in_code_point_order_page_by_page_as_in_sqlite(
    store: PostgresStateStore,
) -> None:
    ids = ["b", "B", "a", "a b", "a-b", "é", "e", "z", "Z", "ä", "\u4e00", "😀", "10", "9", "_"]
    writes = [(member, f"fp-{member}") for member in ids]
    store.intend(SCOPE, "a", writes)
    with SqliteStateStore() as sqlite:
        sqlite.intend(SCOPE, "a", writes)
        assert [k for k, _ in sqlite.iter_entries(SCOPE, "a", page_size=4)] == sorted(ids)
    assert [k for k, _ in store.iter_entries(SCOPE, "a", page_size=4)] == sorted(ids)
    assert [k for k, _ in store.iter_entries(SCOPE, "a", after="a-b", page_size=2)] == [
        k for k in sorted(ids) if k > "a-b"
    ]


def test_100000_entries_are_written_and_read_back_in_order(store: PostgresStateStore) -> None:
    writes = [(f"user-{i}", f"fp-{i}") for i in range(100_000)]
    store.intend(SCOPE, "big", writes)
    store.record(SCOPE, "big", present=writes)
    read = list(store.iter_entries(SCOPE, "big", page_size=7_000))
    assert [k for k, _ in read] == sorted(k for k, _ in writes)
    assert all(entry == Entry(f"fp-{k[5:]}", "settled") for k, entry in read)
    assert store.count(SCOPE, "big") == 100_000


def test_checkpoints_round_trip(store: PostgresStateStore) -> None:
    assert store.checkpoint("run-1") is None
    store.save_checkpoint("run-1", {"cursor": "abc", "done": [1, 2], "ratio": 0.5})
    store.save_checkpoint("run-1", {"cursor": "def"})
    assert store.checkpoint("run-1") == {"cursor": "def"}
    store.clear_checkpoint("run-1")
    assert store.checkpoint("run-1") is None


# -- leases and fencing -------------------------------------------------------------------------


def test_a_live_lease_is_refused_to_others_and_renewed_for_its_owner(
    store: PostgresStateStore,
) -> None:
    first = store.acquire_lease("k", "alpha", 60)
    assert first.held_by("alpha")
    assert first.epoch == 1
    refused = store.acquire_lease("k", "beta", 60)
    assert refused.held_by("alpha")
    assert 0 < refused.expires_in <= 60
    again = store.acquire_lease("k", "alpha", 60)
    assert (again.owner, again.epoch) == ("alpha", 1)
    assert store.renew_lease(again, 60)
    store.release_lease(Lease("k", "beta", 1, 60))  # nothing happens: beta does not hold it
    assert not store.acquire_lease("k", "beta", 60).held_by("beta")
    store.release_lease(again)
    assert store.acquire_lease("k", "beta", 60).held_by("beta")


def test_a_lease_expires_on_the_databases_clock(
    store: PostgresStateStore, postgres_url: str
) -> None:
    before = database_now(postgres_url)
    lease = store.acquire_lease("k", "alpha", 0.3)
    after = database_now(postgres_url)
    expires = lease_expiry(postgres_url, "k")
    assert before + timedelta(seconds=0.3) <= expires <= after + timedelta(seconds=0.3)

    wait_for_database_clock(postgres_url, expires)
    assert not store.renew_lease(lease, 60)
    with pytest.raises(FencingError):
        store.intend(SCOPE, "a", [("u1", "f")], fence=lease)
    assert store.entries(SCOPE, "a") == {}
    taken = store.acquire_lease("k", "beta", 60)
    assert (taken.owner, taken.epoch) == ("beta", 2)


def test_a_write_fenced_by_a_lease_taken_over_raises_and_writes_nothing(
    store: PostgresStateStore, postgres_url: str
) -> None:
    old = store.acquire_lease("k", "alpha", 0.3)
    store.intend(SCOPE, "a", [("u1", "f1")], fence=old)
    wait_for_database_clock(postgres_url, lease_expiry(postgres_url, "k"))
    new = store.acquire_lease("k", "beta", 60)
    assert (new.owner, new.epoch) == ("beta", 2)

    before = store.entries(SCOPE, "a")
    writes = [
        lambda: store.intend(SCOPE, "a", [("u2", "f2")], fence=old),
        lambda: store.accept(SCOPE, "a", "token", ["u1"], fence=old),
        lambda: store.mark(SCOPE, "a", "failed", ["u1"], fence=old),
        lambda: store.record(SCOPE, "a", present={"u3": "f3"}, absent=["u1"], fence=old),
        lambda: store.forget_audience(SCOPE, "a", fence=old),
    ]
    for write in writes:
        with pytest.raises(FencingError, match="epoch 1"):
            write()
    assert store.entries(SCOPE, "a") == before
    assert not store.renew_lease(old, 60)

    store.record(SCOPE, "a", present={"u1": "f1"}, fence=new)
    assert store.entries(SCOPE, "a") == {"u1": Entry("f1", "settled")}


_HOLDER = """
import sys, time
from audiencekit.state.base import lease_owner
from audiencekit.state.postgres import PostgresStateStore
url, owner, ttl = sys.argv[1], sys.argv[2] or lease_owner("run"), float(sys.argv[3])
lease = PostgresStateStore(url).acquire_lease("k", owner, ttl)
print("held" if lease.held_by(owner) else "refused", flush=True)
time.sleep(600)
"""


@pytest.mark.crash
@pytest.mark.parametrize(
    ("owner", "ttl"),
    [("", 60.0), ("elsewhere:4242:run", 0.3)],
    ids=["on-this-host", "on-another-host"],
)
def test_the_lease_of_a_killed_holder_is_taken_over(
    store: PostgresStateStore, postgres_url: str, owner: str, ttl: float
) -> None:
    # The holder names its own process on this host (gone once killed: its lease is taken at
    # once), or a process of another host (taken once its time is up, on the database's clock).
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, postgres_url, owner, str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    if owner:
        wait_for_database_clock(postgres_url, lease_expiry(postgres_url, "k"))
    taken = store.acquire_lease("k", "successor", 60)
    assert (taken.owner, taken.epoch) == ("successor", 2)


# -- the schema ---------------------------------------------------------------------------------


def _open_at_once(url: str, barrier: Any, failures: Any) -> None:
    barrier.wait()
    try:
        with PostgresStateStore(url) as store:
            store.intend(SCOPE, "a", [(str(multiprocessing.current_process().pid), "f")])
    except StateStoreError:
        failures.value += 1


def test_processes_opening_one_new_database_at_once_all_succeed(postgres_url: str) -> None:
    context = multiprocessing.get_context("fork")
    failures = context.Value("i", 0)
    for _ in range(10):
        barrier = context.Barrier(4)
        children = [
            context.Process(target=_open_at_once, args=(postgres_url, barrier, failures))
            for _ in range(4)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert failures.value == 0
        with psycopg.connect(postgres_url) as db:
            assert db.execute("SELECT version FROM audiencekit_schema").fetchall() == [
                (SCHEMA_VERSION,)
            ]
            (count,) = db.execute("SELECT count(*) FROM audiencekit_entries").fetchall()[0]
            assert count == 4
            db.execute(
                "DROP TABLE audiencekit_schema, audiencekit_entries, audiencekit_leases, "
                "audiencekit_checkpoints, audiencekit_runs, audiencekit_run_outcomes"
            )


def test_a_database_shared_with_other_tables_keeps_them(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as db:
        db.execute("CREATE TABLE entries (id int); INSERT INTO entries VALUES (1)")
    with PostgresStateStore(postgres_url) as store:
        store.intend(SCOPE, "a", [("u1", "f")])
    with PostgresStateStore(postgres_url) as store:  # opened again: nothing to upgrade
        assert store.entries(SCOPE, "a") == {"u1": Entry("f", "intended")}
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT id FROM entries").fetchall() == [(1,)]


def test_a_schema_of_a_newer_audiencekit_is_refused_and_left_alone(postgres_url: str) -> None:
    PostgresStateStore(postgres_url).close()
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE audiencekit_schema SET version = 99")
    with pytest.raises(StateStoreVersionError, match="schema 99"):
        PostgresStateStore(postgres_url)
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT version FROM audiencekit_schema").fetchall() == [(99,)]


def test_state_store_open_takes_a_postgresql_url(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://")):
        with StateStore.open(url) as store:
            assert isinstance(store, PostgresStateStore)
            assert urlsplit(url).password not in repr(store)
            assert ":***@" in store.url


# -- errors -------------------------------------------------------------------------------------


def assert_discreet(error: BaseException, *passwords: str) -> None:
    """No text of ``error`` (nor of its chain, nor any connection it carries) holds a password."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    link: BaseException | None = error
    while link is not None:
        texts += [str(link), repr(getattr(link, "pgconn", None))]
        link = link.__cause__ or link.__context__
    assert [text for text in texts for word in passwords if word in text] == []


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return parts._replace(
        netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    ).geturl()


def test_a_wrong_password_is_a_connection_error_that_repeats_no_password(
    postgres_url: str,
) -> None:
    real = urlsplit(postgres_url).password
    assert real is not None
    wrong = with_password(postgres_url, "not-the-password-" + real[:6])
    with pytest.raises(StateStoreConnectionError, match="password authentication failed") as exc:
        PostgresStateStore(wrong)
    assert exc.value.location == wrong.replace("not-the-password-" + real[:6], "***")
    assert_discreet(exc.value, real, "not-the-password-" + real[:6])


def test_a_missing_database_is_an_access_error(postgres_url: str) -> None:
    missing = urlsplit(postgres_url)._replace(path="/no_such_database").geturl()
    with pytest.raises(StateStoreAccessError, match="no_such_database") as exc:
        PostgresStateStore(missing)
    assert ":***@" in exc.value.location
    assert_discreet(exc.value, str(urlsplit(postgres_url).password))


def test_a_user_who_may_not_create_the_tables_gets_an_access_error(postgres_url: str) -> None:
    # Since PostgreSQL 15 only a schema's owner may create tables in it, by default.
    user, password = f"reader_{secrets.token_hex(4)}", secrets.token_hex(8)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    try:
        parts = urlsplit(postgres_url)
        url = parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}").geturl()
        with pytest.raises(StateStoreAccessError, match="permission denied") as exc:
            PostgresStateStore(url)
        assert_discreet(exc.value, password)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(f"DROP ROLE {user}")


@pytest.mark.parametrize(
    "make_bad",
    [
        lambda url, pw: url.replace(pw, pw + "%zz"),  # libpq repeats the broken token
        lambda url, pw: url.replace("@127.0.0.1", "@[::1"),  # libpq repeats the whole URL
        lambda url, pw: url.replace(f":{pw}@", "@") + f"?password={pw}%zz",  # as a parameter
        lambda url, pw: url.replace(urlsplit(url).netloc, urlsplit(url).netloc + "x"),
    ],
    ids=["bad-percent-escape", "unclosed-ipv6-host", "bad-password-parameter", "bad-port"],
)
def test_a_malformed_url_is_a_state_store_error_that_repeats_no_password(
    postgres_url: str, make_bad: Any
) -> None:
    password = str(urlsplit(postgres_url).password)
    with pytest.raises(StateStoreError) as exc:
        PostgresStateStore(make_bad(postgres_url, password))
    assert "***" in exc.value.location
    assert_discreet(exc.value, password)


def test_an_unreachable_server_is_a_connection_error(postgres_url: str) -> None:
    password = str(urlsplit(postgres_url).password)
    closed = urlsplit(postgres_url)._replace(netloc=f"ak:{password}@127.0.0.1:1").geturl()
    blackhole = urlsplit(postgres_url)._replace(netloc=f"ak:{password}@192.0.2.1:5432").geturl()
    for url in (closed, blackhole):  # refused at once; no answer within the timeout
        with pytest.raises(StateStoreConnectionError) as exc:
            PostgresStateStore(url, timeout=1)
        assert_discreet(exc.value, password)


def test_not_a_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="postgresql://") as exc:
        PostgresStateStore("host=db password=hunter2")
    assert "hunter2" not in str(exc.value)


def recovered(store: PostgresStateStore) -> dict[str, Entry]:
    """The entries of audience "a" once the store reconnects (its pool tries again after
    growing pauses)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return store.entries(SCOPE, "a")
        except StateStoreConnectionError:
            assert time.monotonic() < deadline, "the store did not reconnect"


def test_a_server_gone_mid_run_is_a_connection_error_and_the_store_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with own_server() as server:
        with PostgresStateStore(server.url, timeout=1) as store:
            store.intend(SCOPE, "a", [("u1", "f")])
            server.halt()
            with pytest.raises(StateStoreConnectionError) as exc:
                store.intend(SCOPE, "a", [("u2", "f")])
            assert exc.value.location == server.url.replace(server.password, "***")
            assert_discreet(exc.value, server.password)
            server.resume()
            assert recovered(store) == {"u1": Entry("f", "intended")}
        assert "error connecting" in caplog.text  # the pool's attempts, logged
        assert server.password not in caplog.text


# -- a workflow ---------------------------------------------------------------------------------


@pytest.fixture
def batch(connect: Connect) -> BatchBackend:
    return connect(BatchBackend)


@pytest.mark.anyio
async def test_a_sync_journalled_in_postgresql_then_sends_nothing(
    batch: BatchBackend, emulators: EmulatorServer, postgres_url: str
) -> None:
    desired = [Member(f"user-{i}", attributes={"plan": "gold", "rank": i}) for i in range(2_000)]
    with PostgresStateStore(postgres_url) as state:
        await batch.create_audience("synced")
        first = await sync(batch, "synced", desired, state=state)
        assert (first.added, first.changed, first.removed) == (2_000, 0, 0)
        assert state.count(scope_of(batch), "synced") == 2_000
        assert len(emulators.batch.members("synced")) == 2_000

        emulators.batch.requests.clear()
        second = await sync(batch, "synced", desired, state=state)
        assert second.sent == 0
        assert second.unchanged == 2_000
        assert [r for r in emulators.batch.requests if r.path.endswith("/update")] == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p%40ss@db/x", "postgresql://u:***@db/x"),
        ("postgresql://u:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u:pw@[::1/x", "postgresql://u:***@[::1/x"),
        (
            "postgresql://u@db/x?sslmode=require&password=pw",
            "postgresql://u@db/x?sslmode=require&password=***",
        ),
        ("postgresql://db:5432/x", "postgresql://db:5432/x"),
    ],
)
def test_a_url_is_shown_without_its_password_even_when_malformed(url: str, shown: str) -> None:
    assert redacted(url) == shown
    with pytest.raises(ConfigurationError) as exc:
        StateStore.open(url.replace("postgresql", "mysql"))
    assert shown.replace("postgresql", "mysql") in str(exc.value)
