"""Which store a location names: a path is SQLite, a ``postgresql://`` URL is PostgreSQL."""

from __future__ import annotations

import os

from ..core.urls import POSTGRES_SCHEMES, is_url, redacted
from ..errors import ConfigurationError
from .base import StateStore


def open_store(location: str | os.PathLike[str]) -> StateStore:
    """The store ``location`` names (see :meth:`StateStore.open`)."""
    text = os.fspath(location)
    if not is_url(text):
        from .sqlite import SqliteStateStore

        return SqliteStateStore(text)
    scheme = text.partition("://")[0].lower()
    if scheme in POSTGRES_SCHEMES:
        try:
            from .postgres import PostgresStateStore
        except ImportError as exc:
            raise ConfigurationError(
                "a postgresql:// state store needs the postgres extra: "
                "pip install 'audiencekit[postgres]'"
            ) from exc
        return PostgresStateStore(text)
    raise ConfigurationError(
        f"{redacted(text)} is not a state store this version can open: give a path (SQLite) "
        "or a postgresql:// URL"
    )
