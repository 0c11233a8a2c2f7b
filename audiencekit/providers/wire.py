"""The wire toolkit: what a provider's wire module uses to read and write its JSON.

A converter that reads answers leniently (:func:`make_converter`, :func:`structure`: unknown
fields kept in ``extra``, a body of the wrong shape an
:class:`~audiencekit.errors.UnexpectedResponseError` through :func:`unexpected`), compact JSON
(:func:`dumps`, orjson when installed), and the checks every encoder makes of a value before
sending it (:func:`is_text`, :func:`is_finite_number`).
"""

from __future__ import annotations

from ..core.wire import (
    dumps,
    dumps_text,
    fast_dumps,
    is_finite_number,
    is_text,
    make_converter,
    structure,
    unexpected,
    utc,
)

__all__ = [
    "dumps",
    "dumps_text",
    "fast_dumps",
    "is_finite_number",
    "is_text",
    "make_converter",
    "structure",
    "unexpected",
    "utc",
]
