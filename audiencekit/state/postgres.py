"""The PostgreSQL state store (being built: see the changelog)."""

from __future__ import annotations

from ..errors import ConfigurationError
from .base import StateStore

__all__ = ["PostgresStateStore"]


class PostgresStateStore(StateStore):
    """A state store in a PostgreSQL database, for workers on several hosts."""

    def __init__(self, url: str) -> None:
        raise ConfigurationError("the PostgreSQL state store is not available in this build")
