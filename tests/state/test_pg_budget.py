"""One rate budget across hosts, in PostgreSQL: processes that share no file keep one pace on
the database's clock, a refusal pauses them all, and a server that cannot be used leaves each
pacing alone, with one warning that never holds the password."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from audiencekit.core.clock import monotonic
from audiencekit.core.rate import BUDGET_ENV, BudgetUnavailableError, RateGovernor, budget_for
from audiencekit.state.postgres import PostgresBudget
from audiencekit.testing import EmulatorServer
from benchmarks.shared_budget import run_processes

from ..postgres_server import own_server
from ..support import FakeClock
from ..test_budget import SCOPE, STEP, send

#: The rate the processes share in the pace test: fast enough to take a second or two.
RATE = 20.0


@pytest.fixture
def budget(postgres_url: str) -> Iterator[PostgresBudget]:
    opened = PostgresBudget(postgres_url)
    yield opened
    opened.close()


def log_grants(url: str) -> None:
    """Have the database log, on its own clock, each grant its budget table records."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE granted (key text NOT NULL, at timestamptz NOT NULL)")
        db.execute(
            "CREATE FUNCTION log_grant() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO granted VALUES (NEW.key, NEW.written); RETURN NEW; END $$"
        )
        db.execute(
            "CREATE TRIGGER log_grant AFTER INSERT OR UPDATE ON audiencekit_pace FOR EACH ROW "
            "WHEN (NEW.due <> NEW.previous) EXECUTE FUNCTION log_grant()"
        )


HOST = textwrap.dedent(
    f"""
    import sys, anyio
    from audiencekit.core.clock import monotonic
    from audiencekit.core.rate import RateGovernor, budget_for
    budget = budget_for(True, monotonic)
    assert type(budget).__name__ == "PostgresBudget", budget
    governor = RateGovernor({RATE!r}, budget=budget, scope={SCOPE!r})
    anyio.run(governor.acquire, anyio.sleep)  # connected, and one slot taken before the start
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(sys.argv[1])):
        anyio.run(governor.acquire, anyio.sleep)
    assert governor.budget is not None, "the budget failed"
    """
)


def test_processes_on_several_hosts_keep_one_pace_on_the_databases_clock(
    postgres_url: str, budget: PostgresBudget, tmp_path: Path
) -> None:
    """Three processes, each with a data folder of its own (no file shared), take 12 slots each
    at 20 requests/s: the database saw every grant, never two within 1/20 s."""
    budget.grant("another scope", 0.0, 1.0, 0.0)  # creates the budget's tables
    log_grants(postgres_url)
    hosts = []
    for name in ("a", "b", "c"):
        env = {"PATH": "/usr/bin:/bin", BUDGET_ENV: postgres_url, "HOME": str(tmp_path / name)}
        hosts.append(
            subprocess.Popen(
                [sys.executable, "-c", HOST, "12"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for host in hosts:
        assert host.stdout is not None
        assert host.stdout.readline() == "ready\n"
    for host in hosts:
        host.communicate("go\n", timeout=60)
        assert host.returncode == 0
    with psycopg.connect(postgres_url) as db:
        times = [row[0] for row in db.execute("SELECT at FROM granted ORDER BY at")]
    assert len(times) == 3 * (1 + 12)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= timedelta(seconds=1 / RATE) - timedelta(microseconds=2)  # (µs rounding)


def test_a_hold_pauses_every_host(postgres_url: str, budget: PostgresBudget) -> None:
    """A 30 s Retry-After on one host: the other, with a pool of its own (and a clock reading
    days apart), waits those 30 s on the database's clock."""
    refused = RateGovernor(1.0, clock=FakeClock(start=100.0), budget=budget, scope=SCOPE)
    other_host = PostgresBudget(postgres_url)
    try:
        other = RateGovernor(1.0, clock=FakeClock(start=9e5), budget=other_host, scope=SCOPE)
        assert refused.claim() == 0.0
        refused.refused(100.0, 30.0)
        assert 29.0 < other.claim() <= 30.0
        refused.refused(100.0, 5.0)  # a shorter pause does not shorten the first
        assert 29.0 < other_host.grant(SCOPE, 0.0, STEP, 0.0) <= 30.0
    finally:
        other_host.close()


def test_the_hosts_clocks_are_not_read(budget: PostgresBudget, postgres_url: str) -> None:
    """Monotonic readings mean nothing on another host: one that reads 1e9 and one that reads
    -5 share one pace."""
    other_host = PostgresBudget(postgres_url)
    try:
        assert budget.grant(SCOPE, 1e9, 60.0, 0.0) == 0.0
        assert 59.0 < other_host.grant(SCOPE, -5.0, 60.0, 0.0) <= 60.0
        assert 59.0 < budget.grant(SCOPE, 1e9 + 61, 60.0, 0.0) <= 60.0
    finally:
        other_host.close()


def test_the_database_holds_no_credential_nor_its_hash(
    budget: PostgresBudget, postgres_url: str
) -> None:
    budget.grant(SCOPE, 0.0, 1.0, 0.0)
    with psycopg.connect(postgres_url) as db:
        (key,) = db.execute("SELECT key FROM audiencekit_pace").fetchone() or ()
    assert "budget.example.test" not in key
    assert SCOPE.split("\n")[1] not in key
    assert len(key) == 64  # an HMAC-SHA256, keyed by the database's secret


# -- turning it on --------------------------------------------------------------------------


def test_the_environment_names_a_database(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    monkeypatch.setenv(BUDGET_ENV, postgres_url)
    chosen = budget_for(True, monotonic)
    assert isinstance(chosen, PostgresBudget)
    assert budget_for(True, monotonic) is chosen  # one per URL in a process
    password = str(urlsplit(postgres_url).password)
    assert password not in repr(chosen)
    assert chosen.url == postgres_url.replace(password, "***")


def test_a_url_of_another_kind_leaves_each_process_pacing_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(BUDGET_ENV, "redis://user:hunter2@cache/0")
    assert budget_for(True, monotonic) is None
    assert budget_for(True, monotonic) is None
    warnings = [r.getMessage() for r in caplog.records if "shared rate budget" in r.getMessage()]
    assert warnings == [
        "the shared rate budget redis://user:***@cache/0 cannot be used (a PostgreSQL rate "
        "budget takes a postgresql:// URL): each process paces alone"
    ]


# -- a server that cannot be used: each process paces alone, one warning --------------------


def with_netloc(url: str, netloc: str) -> str:
    return urlsplit(url)._replace(netloc=netloc).geturl()


def refused_port(url: str) -> str:
    parts = urlsplit(url)
    return with_netloc(url, f"{parts.username}:{parts.password}@127.0.0.1:1")


def wrong_password(url: str) -> str:
    parts = urlsplit(url)
    return with_netloc(
        url, f"{parts.username}:wrong-{parts.password}@{parts.hostname}:{parts.port}"
    )


def assert_one_discreet_warning(caplog: pytest.LogCaptureFixture, *passwords: str) -> None:
    """One warning says the budget cannot be used; no record repeats a password."""
    texts = [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert sum("shared rate budget" in text for text in texts) == 1
    assert [text for text in texts for word in passwords if word in text] == []


@pytest.mark.parametrize("spoil", [refused_port, wrong_password])
def test_an_unusable_server_leaves_each_process_pacing_alone(
    postgres_url: str, caplog: pytest.LogCaptureFixture, spoil: object
) -> None:
    assert callable(spoil)
    caplog.set_level(logging.DEBUG)
    url = spoil(postgres_url)
    budget = PostgresBudget(url)
    clock = FakeClock(start=100.0)
    one = RateGovernor(1.0, clock=clock, budget=budget, scope=SCOPE)
    two = RateGovernor(1.0, clock=clock, budget=budget, scope=SCOPE)
    sent = [send(governor, clock) for _ in range(2) for governor in (one, two)]
    assert sent == pytest.approx([100.0, 100.0, 100.0 + STEP, 100.0 + STEP])  # each its own
    assert one.budget is None
    assert two.budget is None
    password = str(urlsplit(url).password)
    assert_one_discreet_warning(caplog, password, str(urlsplit(postgres_url).password))
    assert budget.url in caplog.text


def test_a_server_gone_mid_run_leaves_each_process_pacing_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with own_server() as server:
        caplog.set_level(logging.DEBUG)
        budget = PostgresBudget(server.url, timeout=1)
        assert budget.grant(SCOPE, 0.0, 1e-6, 0.0) == 0.0
        server.halt()
        clock = FakeClock(start=100.0)
        governor = RateGovernor(1.0, clock=clock, budget=budget, scope=SCOPE)
        sent = [send(governor, clock) for _ in range(3)]
        assert sent == pytest.approx([100.0, 100.0 + STEP, 100.0 + 2 * STEP])
        assert governor.budget is None
        with pytest.raises(BudgetUnavailableError):
            budget.hold(SCOPE, 0.0, 1.0)
        assert_one_discreet_warning(caplog, server.password)


# -- real programs --------------------------------------------------------------------------


def test_three_hosts_on_one_credential_lose_nothing_and_are_seldom_refused(
    audiencekit_emulators: EmulatorServer, postgres_url: str
) -> None:
    """Three programs adding 10,000 ids each with default settings against the emulator's 1
    request/s, sharing the budget through PostgreSQL only."""
    audiencekit_emulators.batch.config.rate_limit = 1.0
    ends = audiencekit_emulators.endpoints
    env = {"PATH": "/usr/bin:/bin", BUDGET_ENV: postgres_url}
    measured = run_processes(
        ends.batch_url, ends.batch_key, ends.batch_project, processes=3, ids=10_000, env=env
    )
    assert measured["applied"] == 30_000
    assert measured["failed"] == measured["lost"] == 0
    assert measured["accepted"] >= 6  # an update and a view each
    # Without a shared budget most of these 6 requests are refused; shared, none should be.
    # One is allowed: on a loaded 2-core machine an arrival can jitter past the 5% headroom.
    # (The 10% target is the benchmark's, over many more requests.)
    assert measured["refused_429"] <= 1
