"""The public vocabulary: open enums, frozen models, the result and error types."""

from __future__ import annotations

import copy
import pickle
from datetime import datetime, timezone

import attrs
import pytest

import audiencekit
from audiencekit import (
    Add,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Audience,
    AudienceKitError,
    BulkResult,
    Channel,
    Member,
    PartialFailureError,
    PendingChunk,
    PollTimeoutError,
    Remove,
    ValidationError,
)
from audiencekit.errors import (
    ConflictError,
    InternalServerError,
    Problem,
    UnsupportedFeatureError,
    status_error_class,
)
from audiencekit.models import FrozenDict, Url
from audiencekit.providers.batch import IndexingState


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SMS", Channel.SMS),
        ("Viber", Channel.VIBER),
        ("whatsapp", Channel.WHATSAPP),
        ("TELEGRAM", Channel.UNKNOWN),
        (42, Channel.UNKNOWN),
    ],
)
def test_channel_reads_any_value(raw: object, expected: Channel) -> None:
    assert Channel(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("APPLIED", IndexingState.APPLIED),
        ("IN_PROGRESS", IndexingState.IN_PROGRESS),
        ("IN_PROCESS", IndexingState.IN_PROGRESS),
        ("in_process", IndexingState.IN_PROGRESS),
        ("REPLACED", IndexingState.REPLACED),
        ("QUEUED", IndexingState.UNKNOWN),
    ],
)
def test_indexing_state_reads_the_documented_spellings(raw: str, expected: IndexingState) -> None:
    assert IndexingState(raw) is expected
    assert str(IndexingState(raw)) == expected.value


def test_models_are_frozen_and_their_mappings_immutable() -> None:
    attributes = {"first_name": "Ada", "tags": ["a"]}
    member = Member("+37477000000", attributes=attributes)
    attributes["first_name"] = "changed"
    assert member.attributes["first_name"] == "Ada"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        member.id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        member.attributes["x"] = 1  # type: ignore[index]
    assert Member("a", attributes={"k": 1}) == Member("a", attributes={"k": 1})
    assert Member("a", attributes={"k": 1}) != Member("a", attributes={"k": 2})
    assert len({Member("a"), Member("a")}) == 1
    assert Add(member).id == member.id
    assert Remove("a") == Remove("a")


def test_operations_pickle_copy_and_evolve_as_built() -> None:
    """Operations cross process boundaries (multiprocessing, a queue on disk) and get copied;
    their hand-written __init__ must apply what the fields declare."""
    member = Member("u1", attributes={"plan": "gold", "n": 1})
    for op in (Add(member), Remove("u2"), Add(Member("u3"))):
        assert pickle.loads(pickle.dumps(op)) == op
        assert copy.deepcopy(op) == op
    again = pickle.loads(pickle.dumps(member))
    assert type(again.attributes) is FrozenDict
    with pytest.raises(TypeError):
        again.attributes["plan"] = "silver"  # type: ignore[index]
    assert attrs.evolve(member, attributes={"x": True}).attributes == {"x": True}
    assert type(attrs.evolve(member, attributes={"x": True}).attributes) is FrozenDict
    assert Member("u4").attributes == {}
    with pytest.raises(TypeError):
        Member("u5", {"plan": "gold"})  # type: ignore[misc]  (attributes is keyword-only)


def test_audience_keeps_unmodelled_fields_in_extra() -> None:
    audience = Audience(
        id="22089fd7-7b74-4815-8452-3a8e864affbc",
        name="vip",
        provider="dexatel",
        channel=Channel.SMS,
        size=3,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        extra={"account_id": "acc"},
    )
    assert audience.extra["account_id"] == "acc"
    with pytest.raises(TypeError):
        Audience("id", "name", "p")  # type: ignore[misc]  # keyword-only


def test_url_is_a_str_that_says_what_it_is() -> None:
    url = Url("https://example.com/a.png")
    assert isinstance(url, str)
    assert url == "https://example.com/a.png"
    assert repr(url) == "Url('https://example.com/a.png')"


def test_bulk_result_raises_only_for_failures() -> None:
    assert BulkResult(applied=3).raise_for_failures().applied == 3
    pending = BulkResult(
        pending=(PendingChunk(handle="t", audience_id="a", ids=("x", "y")),),
    )
    assert not pending.ok
    assert pending.pending_count == 2
    pending.raise_for_failures()  # pending is not a failure: the caller asked not to wait
    error = ConflictError("exists", provider="p", status=409)
    failed = BulkResult(applied=1, failed={"b": error}, unknown={"c": error})
    with pytest.raises(PartialFailureError, match="1 applied, 1 failed, 1 unknown") as caught:
        failed.raise_for_failures()
    assert caught.value.result is failed
    assert "'b'" in str(caught.value)


def test_validation_error_names_every_problem() -> None:
    problems = [Problem(f"bad number {i}", id=f"n{i}", field="number") for i in range(25)]
    error = ValidationError(problems)
    assert isinstance(error, ValueError)
    assert error.ids == tuple(f"n{i}" for i in range(25))
    text = str(error)
    assert text.startswith("25 problems:")
    assert "id 'n0' field 'number': bad number 0" in text
    assert "and 5 more" in text
    assert str(ValidationError("just this")) == "just this"
    with pytest.raises(ValueError):  # noqa: PT011
        ValidationError([])


def test_the_error_tree() -> None:
    assert issubclass(UnsupportedFeatureError, ValidationError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIConnectionError, APIError)
    assert issubclass(APIStatusError, APIError)
    assert issubclass(PollTimeoutError, TimeoutError)
    for name in audiencekit.errors.__all__:
        obj = getattr(audiencekit.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, AudienceKitError), name
    assert status_error_class(502) is InternalServerError
    error = UnsupportedFeatureError("batch", "list members", "use the state store")
    assert str(error) == "batch does not support list members. use the state store"


def test_public_names_are_exported() -> None:
    for name in audiencekit.__all__:
        assert hasattr(audiencekit, name), name
    assert audiencekit.__version__ == "0.1.0"
