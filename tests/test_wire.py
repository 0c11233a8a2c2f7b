"""The JSON codec: orjson when the 'fast' extra is installed, the standard library otherwise."""

from __future__ import annotations

import json

import httpx
import pytest

from audiencekit import APIError, Member
from audiencekit.core import wire as _wire
from audiencekit.models import FrozenDict


@pytest.fixture(params=["fast", "stdlib"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(_wire, "_fast_dumps", None)
        monkeypatch.setattr(_wire, "_fast_loads", None)
    elif _wire._fast_dumps is None:
        pytest.skip("orjson is not installed")
    return str(request.param)


def test_both_codecs_write_the_same_json(codec: str) -> None:
    member = Member("ü-1", attributes={"plan": "gold", "n": 3, "ok": True, "tags": ["a"]})
    body = {"name": "a", "ids": [{"action": "add", "id": member.id,
                                  "attributes": member.attributes}]}  # fmt: skip
    encoded = _wire.dumps(body)
    assert isinstance(encoded, bytes)
    assert json.loads(encoded) == {
        "name": "a",
        "ids": [{"action": "add", "id": "ü-1",
                 "attributes": {"plan": "gold", "n": 3, "ok": True, "tags": ["a"]}}],
    }  # fmt: skip
    assert b" " not in encoded
    response = httpx.Response(200, content=encoded)
    assert _wire.read_json(response, provider="p", redact=str) == json.loads(encoded)


def test_a_body_that_is_not_json_is_an_api_error(codec: str) -> None:
    with pytest.raises(APIError, match="not JSON"):
        _wire.read_json(httpx.Response(200, content=b"<html>"), provider="p", redact=str)


def test_attributes_are_a_frozen_dict_that_serialises_as_it_is() -> None:
    attributes = Member("x", attributes={"a": 1}).attributes
    assert type(attributes) is FrozenDict
    assert json.dumps(attributes) == '{"a": 1}'
    for change in (
        lambda: attributes.__setitem__("b", 2),
        lambda: attributes.update(b=2),
        lambda: attributes.pop("a"),
        attributes.clear,
    ):
        with pytest.raises(TypeError):
            change()
    assert attributes == {"a": 1}
