"""Shared fixtures: every async test runs under asyncio and trio, and no test logs a secret."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol, overload

import pytest

from audiencekit.core.rate import BUDGET_ENV
from audiencekit.options import PollPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.testing import EmulatorServer, InstantClock
from audiencekit.testing._batch import DEFAULT_BATCH_KEY
from audiencekit.testing._dexatel import DEFAULT_DEXATEL_KEY

from .children import env, server  # noqa: F401 (fixtures: child processes on the emulators)
from .postgres_server import postgres_server, postgres_url  # noqa: F401 (fixtures)

#: Every key the suite uses that is long enough to recognise in a log line.
SECRETS = (
    DEFAULT_BATCH_KEY,
    DEFAULT_DEXATEL_KEY,
    "sk_test_4f1d9c2b7a0e48e5b61c",
    "secret-key-123",
    "k-from-env",
)


@pytest.fixture(autouse=True)
def private_budget(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Keeps the shared rate budget out of the user's folder: each test has a budget file of
    its own (not made until a paced request needs it), through ``AUDIENCEKIT_SHARED_BUDGET``,
    so that child processes use it too."""
    path = tmp_path_factory.mktemp("budget") / "budget.sqlite3"
    monkeypatch.setenv(BUDGET_ENV, str(path))
    return path


#: The ceiling (requests/s) that :func:`batch_unpaced` gives the command line's Batch backends.
UNPACED = 1_000.0


@pytest.fixture
def batch_unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch backends built with default settings in this process (by the command line, the
    demo) get a ceiling of ``UNPACED`` requests/s instead of Batch's 1 request/s, on the real
    clock: for the tests of what a command prints and sends, which is the same at any pace,
    and would otherwise spend most of their time waiting for it. The governor (and the shared
    budget) stay in the path. The pacing itself is tested on its own, at the default
    (tests/reliability/test_batch_in_the_field.py, tests/test_budget.py), and so is the
    installed command in child processes (not affected)."""
    monkeypatch.setitem(BatchBackend.__init__.__kwdefaults__, "rate_limit", UNPACED)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def emulators(audiencekit_emulators: EmulatorServer) -> EmulatorServer:
    """The loopback emulators; each Batch write needs one view of its token to apply."""
    audiencekit_emulators.batch.config.index_polls = 1
    return audiencekit_emulators


class Connect(Protocol):
    @overload
    def __call__(self, provider: type[BatchBackend], **options: Any) -> BatchBackend: ...
    @overload
    def __call__(self, provider: type[DexatelBackend], **options: Any) -> DexatelBackend: ...


@pytest.fixture
async def connect(
    emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> AsyncIterator[Connect]:
    """``connect(BatchBackend | DexatelBackend, **options)``: a backend on the loopback
    emulators whose waits cost no real time; closed after the test."""
    made: list[Any] = []
    ends = emulators.endpoints

    def connect(provider: type[Any], **options: Any) -> Any:
        settings: dict[str, Any] = {"sleep": audiencekit_clock.sleep, "clock": audiencekit_clock}
        settings.update(ends[provider.provider].options)
        if provider is BatchBackend:
            settings.update(poll=PollPolicy(max_wait=60, interval=0.5))
        backend = provider(**(settings | options))
        made.append(backend)
        return backend

    yield connect  # type: ignore[misc]
    for backend in made:
        await backend.aclose()


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        self.leaks += [text for secret in SECRETS if secret in text]


@pytest.fixture(autouse=True)
def no_secret_in_any_log_record() -> Iterator[None]:
    """Across the whole suite: at DEBUG, on every logger, no record carries an API key."""
    recorder = _Recorder()
    root = logging.getLogger()
    # httpcore at DEBUG traces every socket step without header values (and would double the
    # suite's time): test_redaction covers it; here audiencekit and httpx log at DEBUG.
    levels = {name: logging.getLogger(name).level for name in ("audiencekit", "httpx")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(recorder)
    try:
        yield
    finally:
        root.removeHandler(recorder)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert recorder.leaks == [], f"a secret was logged: {recorder.leaks[:3]}"
