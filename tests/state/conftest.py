"""The state stores' tests: a real PostgreSQL server (see tests/postgres_server.py)."""

from __future__ import annotations

from ..postgres_server import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
