"""Which store a location names: a path is SQLite, a ``postgresql://`` URL is PostgreSQL."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import StateStore

#: ``scheme://``: a URL, not a path (a Windows drive letter has no "//" after its colon).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a path."""
    return bool(_URL.match(location))


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print)."""
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:  # a netloc urllib cannot read: keep the scheme only
        return f"{parts.scheme}://***"
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


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
