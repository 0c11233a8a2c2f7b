"""A real PostgreSQL for the tests: a throwaway server started once per session (or the one
``AUDIENCEKIT_TEST_POSTGRES_URL`` names: its user must be allowed to create databases and
roles), and a fresh, empty database for each test.

Where no server can be started the PostgreSQL tests are skipped with the reason, except
under CI (``CI`` set), where that is a failure. The server itself is
:class:`audiencekit.testing._postgres.PostgresServer` (the benchmarks start one too).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

from audiencekit.testing._postgres import PostgresServer, ServerUnavailable, database_url

__all__ = [
    "URL_VARIABLE",
    "PostgresServer",
    "ServerUnavailable",
    "database_url",
    "own_server",
    "postgres_server",
    "postgres_url",
    "unavailable",
]

#: The environment variable naming a server to use instead of starting one.
URL_VARIABLE = "AUDIENCEKIT_TEST_POSTGRES_URL"


def unavailable(reason: str) -> NoReturn:
    """Skip the test that needs a server, or fail it under CI, where every test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is needed under CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason}")


@contextmanager
def own_server() -> Iterator[PostgresServer]:
    """A throwaway server of the caller's own (to stop, halt or break), stopped afterwards."""
    try:
        server = PostgresServer()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL (with a password) of a PostgreSQL server for the session: the one
    ``AUDIENCEKIT_TEST_POSTGRES_URL`` names, or a throwaway server started for it."""
    if os.environ.get(URL_VARIABLE):
        yield os.environ[URL_VARIABLE]
        return
    with own_server() as server:
        yield server.url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server (dropped after the test)."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[test]')")
    name = f"audiencekit_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
