"""The rate governor: one request budget per credential, learned from the provider's answers.

Every transport made with one (base URL, credential) in a process draws from the same governor,
so a bulk call's writes, its status polls and anything else sent with those keys share one pace.
The pace starts at the ceiling (the provider's published or reported limit, or the caller's
``rate_limit``), falls when the provider answers 429 and climbs back while it accepts requests
(additive increase, multiplicative decrease). A ``Retry-After`` pauses every request of the budget
for that long (without one, the pause is one interval at the lowered pace).

The processes of one host share each budget too, through a :class:`SharedBudget`: by default a
small SQLite file in the user's data folder (:class:`SqliteBudget`), which holds, per credential
and base URL (a keyed hash of them), when the next request may go. Each process still spaces its
own requests by its own learned pace; ``AUDIENCEKIT_SHARED_BUDGET=off``, another file's path, or
a ``postgresql://`` URL (processes on several hosts:
:class:`~audiencekit.state.postgres.PostgresBudget`), and ``ClientOptions(shared_budget=...)``
choose otherwise. A budget that cannot be used leaves each process pacing alone, with one
warning. The governor asks its budget in a worker thread, never on the event loop.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import anyio.to_thread

from ..errors import ConfigurationError
from .clock import Clock, Sleep, monotonic
from .paths import user_data_dir
from .urls import is_url, redacted

__all__ = [
    "BUDGET_ENV",
    "HEADROOM",
    "BudgetUnavailableError",
    "RateGovernor",
    "SharedBudget",
    "SqliteBudget",
    "budget_for",
    "budget_unusable",
    "forget_governors",
    "governor_for",
    "named_budget",
]

logger = logging.getLogger("audiencekit")

#: The pace is this fraction of the rate: a provider's token bucket with no burst refuses a
#: request that arrives a millisecond early, and arrival times jitter by more than that.
HEADROOM = 0.95
#: After a refusal, the rate is multiplied by this...
DECREASE = 0.7
#: ...and each accepted request adds this fraction of the ceiling back (or of the rate itself,
#: when there is no ceiling), until the ceiling.
INCREASE = 0.05
#: The slowest the governor goes on its own: one request every 20 seconds.
MIN_RATE = 0.05
_EPSILON = 1e-6
#: How late a sleep may wake (the event loop's timers have about a millisecond's grain).
_TIMER_SLACK = 0.001
#: How many recent sends an unpaced governor remembers to know how fast it was going.
_WINDOW = 32

#: ``off`` (or 0, false, no): each process paces alone; a path: the budget file to share; a
#: ``postgresql://`` URL: the database to share it in.
BUDGET_ENV = "AUDIENCEKIT_SHARED_BUDGET"
_OFF = frozenset({"off", "0", "false", "no"})
#: How long a grant waits for another process's transaction before the file counts as unusable.
LOCK_TIMEOUT = 0.5
#: A due time written this much later than the clock reads now was written before a restart
#: (less: by a process that read the clock a moment after this one, then took the lock first).
_REBOOTED = 60.0


def take_slot(due: float, now: float, interval: float, slack: float) -> float | None:
    """When the slot after the one ``due`` is, once that one is taken at ``now``; None while it
    is not due yet. A slot taken up to ``slack`` late keeps the pace (the next one is still an
    interval after it), so that sleeps waking late do not slow it; a later one starts anew."""
    if due - now > _EPSILON:  # (a float clock may stop just short of a slot)
        return None
    return (due if now - due <= slack else now) + interval


class BudgetUnavailableError(Exception):
    """A shared budget cannot be used (its file is corrupt, unreadable, locked; its server
    unreachable...)."""


def budget_unusable(where: str, reason: object) -> BudgetUnavailableError:
    """Warn that the budget ``where`` cannot be used (its caller does it once), and the error
    saying why."""
    logger.warning(
        "the shared rate budget %s cannot be used (%s): each process paces alone", where, reason
    )
    return BudgetUnavailableError(f"{where}: {reason}")


class SharedBudget(Protocol):
    """A request budget that several governors (processes, or hosts) draw from: per ``scope``
    (a credential at a base URL, named by a hash, never the credential), when the next request
    may go. Times are seconds on the clock every party reads alike (for one host: the host's
    monotonic clock). Raises :class:`BudgetUnavailableError` when it cannot be used: the
    governor then paces its process alone."""

    def grant(self, scope: str, now: float, interval: float, slack: float) -> float:
        """Take the slot of ``scope`` when it is due at ``now`` and return 0.0 (the next one is
        ``interval`` on: see :func:`take_slot`); else return the seconds until it is due."""
        ...

    def hold(self, scope: str, now: float, pause: float) -> None:
        """Give no slot of ``scope`` before ``now + pause`` (the provider refused a request)."""
        ...


class SqliteBudget:
    """A :class:`SharedBudget` in one SQLite file (WAL mode), for the processes of one host: one
    short ``BEGIN IMMEDIATE`` transaction per grant. Each scope is stored under an HMAC of it,
    keyed by a random secret kept in the file. Opened on first use; after a failure, every call
    raises :class:`BudgetUnavailableError` (and the first logs a warning)."""

    #: ``PRAGMA application_id`` of a budget file ("akbu"): no other database is written to.
    APPLICATION_ID = 0x616B6275

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._secret = b""
        self._failure: str | None = None

    def __repr__(self) -> str:
        return f"<SqliteBudget {self.path}>"

    def grant(self, scope: str, now: float, interval: float, slack: float) -> float:
        with self._transaction(scope, now) as (db, key, due):
            after = take_slot(due, now, interval, slack)
            if after is None:
                return due - now
            db.execute(_STORE, (key, after, now))
            return 0.0

    def hold(self, scope: str, now: float, pause: float) -> None:
        with self._transaction(scope, now) as (db, key, due):
            if now + pause > due:
                db.execute(_STORE, (key, now + pause, now))

    @contextmanager
    def _transaction(
        self, scope: str, now: float
    ) -> Iterator[tuple[sqlite3.Connection, str, float]]:
        """The connection, in a write transaction, with the stored key and due time of
        ``scope``. A due time written well after ``now`` is from before the host restarted (the
        monotonic clock starts again at boot): it is ignored."""
        with self._lock:
            if self._failure is not None:
                raise BudgetUnavailableError(self._failure)
            try:
                db = self._connection()
                key = hmac.new(self._secret, scope.encode(), hashlib.sha256).hexdigest()
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(
                        "SELECT due, written FROM pace WHERE key = ?", (key,)
                    ).fetchone()
                    due = -math.inf if row is None or row[1] > now + _REBOOTED else float(row[0])
                    yield db, key, due
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except (sqlite3.Error, OSError, BudgetUnavailableError) as exc:
                raise self._unusable(exc) from None

    def _connection(self) -> sqlite3.Connection:
        """The open file (opened again in a forked child: a connection is not shared)."""
        if self._db is not None and self._pid == os.getpid():
            return self._db
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # private, from the start
        db = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._secret = self._prepare(db)
        except BaseException:
            db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db

    def _prepare(self, db: sqlite3.Connection) -> bytes:
        """Make ``db`` a budget file, unless it is another database, and return its secret
        (in one transaction: processes started together may open a new file at once)."""
        self._check_ours(db)  # before switching another database's journal mode
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise BudgetUnavailableError("WAL mode refused")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("BEGIN IMMEDIATE")  # (closing the connection on an error rolls it back)
        if not self._check_ours(db):
            db.execute(f"PRAGMA application_id = {self.APPLICATION_ID}")
            for statement in _SCHEMA:
                db.execute(statement)
        secret = bytes(db.execute("SELECT secret FROM secret").fetchone()[0])
        db.execute("COMMIT")
        return secret

    def _check_ours(self, db: sqlite3.Connection) -> bool:
        """Whether ``db`` is a budget file already (False: an empty one); else raise."""
        if db.execute("PRAGMA application_id").fetchone()[0] == self.APPLICATION_ID:
            return True
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise BudgetUnavailableError("not an audiencekit budget file")
        return False

    def _unusable(self, exc: Exception) -> BudgetUnavailableError:
        """Note that the file cannot be used (warning once), and the error saying why."""
        error = budget_unusable(str(self.path), exc)
        self._failure = str(error)
        if self._db is not None:
            self._db.close()
            self._db = None
        return error


_SCHEMA = (
    "CREATE TABLE secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret BLOB NOT NULL)",
    "INSERT INTO secret VALUES (1, randomblob(32))",
    "CREATE TABLE pace (key TEXT PRIMARY KEY, due REAL NOT NULL, written REAL NOT NULL)",
)
_STORE = (
    "INSERT INTO pace VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET due = excluded.due, written = excluded.written"
)

_budgets: dict[str, SharedBudget | None] = {}


def budget_for(choice: SharedBudget | bool, clock: Clock) -> SharedBudget | None:
    """The budget a governor on ``clock`` shares: ``choice`` when it is one; with True, the one
    ``AUDIENCEKIT_SHARED_BUDGET`` names (see :func:`named_budget`; none when it is ``off``),
    for the host's clock only (a test's clock is a world of its own); with False, none."""
    if not isinstance(choice, bool):
        return choice
    setting = os.environ.get(BUDGET_ENV, "").strip()
    if not choice or clock is not monotonic or setting.lower() in _OFF:
        return None
    with _registry_lock:
        if setting not in _budgets:
            _budgets[setting] = named_budget(setting)
        return _budgets[setting]


def named_budget(setting: str) -> SharedBudget | None:
    """The budget ``setting`` names: with a ``postgresql://`` URL, that database's (for hosts
    that share a credential: :class:`~audiencekit.state.postgres.PostgresBudget`); with a path,
    that file; empty, ``budget.sqlite3`` in the user's data folder. None, with a warning, for a
    URL this installation cannot use."""
    if not is_url(setting):
        return SqliteBudget(
            Path(setting).expanduser() if setting else user_data_dir() / "budget.sqlite3"
        )
    try:
        from ..state.postgres import PostgresBudget

        return PostgresBudget(setting)
    except ImportError:
        reason = "it needs the postgres extra: pip install 'audiencekit[postgres]'"
    except ConfigurationError as exc:
        reason = str(exc)
    budget_unusable(redacted(setting), reason)
    return None


class RateGovernor:
    """The pace of one credential: :meth:`claim` a slot before each request, then report how it
    went with :meth:`accepted` or :meth:`refused`. Safe to share across tasks and threads.

    With a ``budget``, the slots of ``scope`` are shared with every governor drawing from it
    (other processes): each takes them at its own learned pace."""

    def __init__(
        self,
        ceiling: float,
        *,
        clock: Clock = monotonic,
        budget: SharedBudget | None = None,
        scope: str = "",
    ) -> None:
        if not ceiling > 0:
            raise ValueError("ceiling must be a positive number of requests per second")
        self.ceiling = ceiling
        self._clock = clock
        self._lock = threading.Lock()
        self._asking = threading.Lock()  # one claim at a time asks the shared budget
        #: Requests per second now; None while unpaced (no ceiling and no refusal yet).
        self._rate: float | None = ceiling if math.isfinite(ceiling) else None
        self._next = -math.inf  # the earliest time the next request may go
        self._lowered_at = -math.inf  # when the rate was last lowered
        self._sent: collections.deque[float] = collections.deque(maxlen=_WINDOW)
        self.refusals = 0
        #: The budget shared with other processes (None: this process paces alone).
        self.budget = budget
        self._scope = scope

    def __repr__(self) -> str:
        rate = "unpaced" if self._rate is None else f"{self._rate:.3g}/s"
        return f"<RateGovernor {rate} ceiling={self.ceiling:g}/s>"

    @property
    def rate(self) -> float | None:
        """Requests per second the governor allows now (None: it does not pace at all)."""
        return self._rate

    def claim(self) -> float:
        """Take the next slot when it is due and return 0.0; else return the seconds until it is
        (claim again then: the pace may have changed meanwhile). A shared budget is asked in
        the calling thread (see :meth:`acquire`), one claim at a time."""
        with self._asking:
            with self._lock:
                now = self._clock()
                if self._next - now > _EPSILON:
                    return self._next - now
                if self._rate is None:
                    self._sent.append(now)
                    return 0.0
                # The next slot is one paced interval on. A request sent late (sleeps wake up
                # to a millisecond late) may take back the headroom, or that millisecond: the
                # pace does not drift, and requests never bunch up by more than that.
                paced = 1.0 / (self._rate * HEADROOM)
                catch_up = max(paced - 1.0 / self._rate, _TIMER_SLACK)
            # Without the lock: accepted() and refused() do not wait for the budget's answer.
            wait = self._shared(lambda budget: budget.grant(self._scope, now, paced, catch_up))
            with self._lock:
                if wait > 0:
                    # Another process took the slot: this one's tasks wait for the next
                    # without asking the budget again meanwhile.
                    self._next = max(self._next, now + wait)
                    return self._next - now
                after = take_slot(self._next, now, paced, catch_up)
                if after is None:  # refused() pushed the next slot back meanwhile
                    return self._next - now
                self._next = after
                self._sent.append(now)
                return 0.0

    async def acquire(self, sleep: Sleep) -> float:
        """Wait for a slot (with ``sleep``) and take it; return the seconds slept for it (0.0
        when one was free). A claim that asks a shared budget runs in a worker thread: that
        may take a round trip to a database server (or, when the server is gone, its
        timeout), which must not hold the event loop."""
        waited = 0.0
        while True:
            wait = await anyio.to_thread.run_sync(self.claim) if self._asks() else self.claim()
            if wait <= 0:
                return waited
            await sleep(wait)
            waited += wait

    def _asks(self) -> bool:
        """Whether a claim now would ask the shared budget (a paced slot is due here)."""
        with self._lock:
            due = self._next - self._clock() <= _EPSILON
            return due and self._rate is not None and self.budget is not None

    def accepted(self) -> None:
        """A request went through: raise the rate a step, up to the ceiling."""
        with self._lock:
            rate = self._rate
            if rate is None or rate >= self.ceiling:
                return
            step = INCREASE * (self.ceiling if math.isfinite(self.ceiling) else rate)
            self._rate = min(self.ceiling, rate + step)

    def refused(self, sent_at: float, retry_after: float | None) -> None:
        """A request sent at ``sent_at`` was refused (429): lower the rate (once for all the
        requests already on their way when it was last lowered), and send nothing before
        ``retry_after`` seconds, or one interval at the new rate, have passed; the shared
        budget is told so in the calling thread (see :meth:`report_refusal`)."""
        with self._lock:
            now = self._clock()
            self.refusals += 1
            if sent_at >= self._lowered_at:
                rate = self._rate if self._rate is not None else self._recent_rate()
                self._rate = max(MIN_RATE, rate * DECREASE)
                self._lowered_at = now
            assert self._rate is not None
            pause = retry_after if retry_after is not None else 1.0 / (self._rate * HEADROOM)
            self._next = max(self._next, now + pause)
        self._shared(lambda budget: budget.hold(self._scope, now, pause))

    async def report_refusal(self, sent_at: float, retry_after: float | None) -> None:
        """:meth:`refused`, in a worker thread while the budget is shared (as in
        :meth:`acquire`)."""
        if self.budget is None:
            self.refused(sent_at, retry_after)
        else:
            await anyio.to_thread.run_sync(self.refused, sent_at, retry_after)

    def set_ceiling(self, ceiling: float) -> None:
        """Make ``ceiling`` the highest rate, starting from it when it is finite."""
        with self._lock:
            if ceiling != self.ceiling:
                self.ceiling = ceiling
                self._rate = ceiling if math.isfinite(ceiling) else None

    def _shared(self, call: Callable[[SharedBudget], float | None]) -> float:
        """``call`` on the shared budget (0.0 without one); a budget that cannot be used is
        dropped, and this process paces alone from then on."""
        if self.budget is not None:
            try:
                return call(self.budget) or 0.0
            except BudgetUnavailableError:
                self.budget = None
        return 0.0

    def _recent_rate(self) -> float:
        """How fast an unpaced governor was sending, from its last sends."""
        sent = self._sent
        if len(sent) < 2 or sent[-1] <= sent[0]:
            return 1.0
        return (len(sent) - 1) / (sent[-1] - sent[0])


_governors: weakref.WeakValueDictionary[tuple[str, str, object, object], RateGovernor] = (
    weakref.WeakValueDictionary()
)
_registry_lock = threading.Lock()


def governor_for(
    base_url: str,
    credential: str,
    ceiling: float,
    clock: Clock = monotonic,
    budget: SharedBudget | None = None,
) -> RateGovernor:
    """The governor of ``credential`` at ``base_url`` in this process (made on first use),
    drawing from ``budget`` with the other processes when one is given.

    Only a hash of the credential is kept. Transports with their own ``clock`` (tests) get a
    governor of their own, since a pace is a position on one clock; so do transports with
    another budget. A budget has one ceiling: the last transport made with a different one
    sets it.
    """
    digest = hashlib.sha256(credential.encode()).hexdigest()
    key = (base_url, digest, clock, budget)
    with _registry_lock:
        governor = _governors.get(key)
        if governor is None:
            governor = RateGovernor(
                ceiling, clock=clock, budget=budget, scope=f"{base_url}\n{digest}"
            )
            _governors[key] = governor
        else:
            governor.set_ceiling(ceiling)
        return governor


def forget_governors() -> None:
    """Forget every budget learned so far (for test suites that reuse one server)."""
    with _registry_lock:
        _governors.clear()
