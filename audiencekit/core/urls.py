"""Locations of stores and budgets: a URL told from a path, and its passwords kept hidden."""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["POSTGRES_SCHEMES", "is_url", "passwords", "redacted"]

#: ``scheme://``: a URL, not a path (a Windows drive letter has no "//" after its colon).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

POSTGRES_SCHEMES = ("postgresql", "postgres")

#: Where a URL holds a password (group 2): after ``user:`` before the last ``@`` of the
#: authority, and in a ``password=`` parameter. Read without a URL parser, so that a
#: malformed URL (which no parser accepts) is redacted too.
_PASSWORDS = (
    re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)([^/?#]*)(@)"),
    re.compile(r"([?&]password=)([^&#]*)()"),
)


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a path."""
    return bool(_URL.match(location))


def redacted(url: str) -> str:
    """``url`` with its passwords replaced by ``***`` (safe to print, even when malformed)."""
    for pattern in _PASSWORDS:
        url = pattern.sub(r"\1***\3", url)
    return url


def passwords(url: str) -> set[str]:
    """The passwords ``url`` holds, as written and percent-decoded: what :func:`redacted`
    hides, and what no error about the URL may repeat."""
    found = {match[2] for pattern in _PASSWORDS for match in pattern.finditer(url)}
    return {text for word in found for text in (word, unquote(word)) if text}
