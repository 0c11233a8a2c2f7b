"""What both providers' wire modules share: a cattrs converter and lenient reading of bodies.

Provider answers are read leniently: unknown fields are kept in ``extra`` (never dropped, never an
error), missing optional ones become None, and a body that does not have the expected shape is an
:class:`~audiencekit.APIError` naming the provider, not a ``KeyError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs
import httpx

from ..errors import UnexpectedResponseError
from ..models import OpenEnum

_fast_dumps: Callable[[Any], bytes] | None
_fast_loads: Callable[[bytes], Any] | None
try:  # the "fast" extra: a JSON codec about 15 times faster on bulk payloads
    import orjson
except ImportError:  # pragma: no cover - the tests switch it off to cover this path
    _fast_dumps = _fast_loads = None
else:
    _fast_dumps, _fast_loads = orjson.dumps, orjson.loads

__all__ = [
    "dumps",
    "dumps_text",
    "fast_dumps",
    "is_finite_number",
    "is_text",
    "make_converter",
    "read_json",
    "redact_json",
    "structure",
    "unexpected",
    "utc",
]

T = TypeVar("T")


def _is_open_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, OpenEnum)


def make_converter(parse_datetime: Callable[[str], datetime]) -> cattrs.Converter:
    """A converter that reads the open enums and the provider's date format."""
    # Without detailed validation cattrs builds plain, fast code; a bad body still raises.
    converter = cattrs.Converter(detailed_validation=False)
    converter.register_structure_hook_func(_is_open_enum, lambda v, kind: kind(v))
    converter.register_structure_hook(datetime, lambda v, _: parse_datetime(v))
    converter.register_unstructure_hook(datetime, lambda v: v.isoformat())
    return converter


def structure(
    converter: cattrs.Converter,
    data: Any,
    cls: type[T],
    *,
    provider: str,
    redact: Callable[[str], str],
) -> T:
    """Build ``cls`` from a JSON object; fields it does not model go to its ``extra``.

    What cannot be read is an UnexpectedResponseError whose message and body went through
    ``redact`` (the transport's), raised with no ``__context__``.
    """
    if not isinstance(data, Mapping):
        raise unexpected(
            f"{provider} answered {type(data).__name__} where an object was expected",
            provider=provider,
            body=data,
            redact=redact,
        )
    names = {field.name for field in attrs.fields(cls)}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names and v is not None}
    if "extra" in names:
        known["extra"] = {k: v for k, v in data.items() if k not in names}
    problem = ""
    try:
        return converter.structure(known, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        problem = str(exc)
    raise unexpected(
        f"{provider} answered a {cls.__name__} that could not be read: {problem}",
        provider=provider,
        body=data,
        redact=redact,
    )


def read_json(response: httpx.Response, *, provider: str, redact: Callable[[str], str]) -> Any:
    """The JSON body of a successful answer, or an UnexpectedResponseError saying what came."""
    try:
        if _fast_loads is not None:
            return _fast_loads(response.content)
        return json.loads(response.content)
    except ValueError:
        pass  # raised below, outside the except: the decoder's error holds the whole body
    raise unexpected(
        f"{provider} answered {response.status_code} with a body that is not JSON: "
        f"{response.text[:200]!r}",
        provider=provider,
        redact=redact,
    )


def unexpected(
    message: str, *, provider: str, redact: Callable[[str], str], body: object = None
) -> UnexpectedResponseError:
    """An UnexpectedResponseError with ``redact`` applied to its message and every string of
    its body."""
    return UnexpectedResponseError(
        redact(message), provider=provider, body=redact_json(body, redact)
    )


def redact_json(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with ``redact`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_json(v, redact) for v in value]
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_json(v, redact) for k, v in value.items()}
    return value


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON. (Values are checked before they get here: no NaN, no infinities.)"""
    if _fast_dumps is not None:
        return _fast_dumps(data)
    return _encoder.encode(data).encode()


#: :func:`dumps` itself when orjson is installed: a loop run for every member of a bulk call
#: calls it without a Python frame in between.
fast_dumps: Callable[[Any], bytes] = _fast_dumps if _fast_dumps is not None else dumps


def dumps_text(data: Any) -> str:
    """Compact JSON as text, for small values kept a while: orjson's bytes each keep a block
    of several kilobytes (a million of them, gigabytes); decoded, they are freed at once."""
    if _fast_dumps is not None:
        return _fast_dumps(data).decode()
    return _encoder.encode(data)


def utc(when: datetime) -> datetime:
    """``when`` in UTC; a naive datetime is taken to be UTC already (providers' dates are)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def is_text(value: str) -> bool:
    """Whether a string can be sent at all (a lone surrogate cannot be encoded)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is an int or a finite float (JSON has no NaN, no infinities)."""
    return isinstance(value, (int, float)) and not (
        isinstance(value, float) and not math.isfinite(value)
    )
