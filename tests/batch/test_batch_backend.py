"""BatchBackend against the Batch emulator over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest

from audiencekit import (
    Add,
    AudienceBackend,
    AuthenticationError,
    ConfigurationError,
    Member,
    NotFoundError,
    PollTimeoutError,
    Remove,
    ValidationError,
)
from audiencekit.core import wire as _wire
from audiencekit.errors import ConflictError, UnsupportedFeatureError, WriteReplacedError
from audiencekit.models import Url
from audiencekit.options import PollPolicy
from audiencekit.providers import open_backend
from audiencekit.providers.batch import BatchBackend
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing
from audiencekit.testing.contract import BackendContract, Observe

from ..openapi import validate_request
from .conftest import MakeBackend

pytestmark = pytest.mark.anyio


class TestBatchContract(BackendContract):
    @pytest.fixture
    def observe(self, emulators: EmulatorServer) -> Observe:
        async def observe(audience_id: str) -> Mapping[str, Mapping[str, Any]]:
            return emulators.batch.members(audience_id)

        return observe


def updates(server: EmulatorServer) -> list[list[dict[str, Any]]]:
    return [
        r.body["ids"]
        for r in server.batch.requests
        if r.path.endswith("/audiences/update") and r.status == 202
    ]


def requests_validate(server: EmulatorServer) -> int:
    """Every request the client sent validates against the OpenAPI excerpt."""
    checked = 0
    for request in server.batch.requests:
        if request.method == "POST":
            validate_request(request.method, request.path, request.body)
            checked += 1
    return checked


async def test_25001_adds_make_three_update_calls(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("big")
    members = (
        Member(f"user-{i}", attributes={"rank": i, "vip": i % 2 == 0}) for i in range(25_001)
    )
    result = await backend.add_members("big", members)

    assert sorted(len(ids) for ids in updates(emulators)) == [5_001, 10_000, 10_000]
    held = emulators.batch.members("big")
    assert len(held) == 25_001
    assert held["user-25000"] == {"rank": 25_000, "vip": True}
    assert held["user-7"] == {"rank": 7, "vip": False}
    assert result.applied == 25_001
    assert result.chunks == 3
    assert len(result.handles) == 3
    views = [
        r
        for r in emulators.batch.requests
        if r.path.endswith("/audiences/view") and any(t in r.query for t in result.handles)
    ]
    assert result.polls == len(views) == 3  # one view per token: as many as needed, no more
    assert requests_validate(emulators) == 4  # create + 3 updates


async def test_an_id_added_then_removed_chunks_later_is_absent_despite_reordering(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    emulators.batch.set_faults(FaultPlan([Fault.reorder()], seed=11))
    backend = make_backend(chunk_size=3, concurrency=8)
    await backend.create_audience("ordered")
    ops = [
        Add(Member("x", attributes={"v": 1})), Add(Member("a")), Add(Member("b")),   # chunk 1
        Add(Member("c")), Add(Member("d")), Add(Member("e")),                        # chunk 2
        Remove("x"), Add(Member("f")), Add(Member("g")),                             # chunk 3
        Add(Member("h")), Add(Member("x", attributes={"v": 2})), Remove("a"),        # chunk 4
    ]  # fmt: skip
    await backend.apply("ordered", ops)
    assert emulators.batch.members("ordered") == {
        "b": {}, "c": {}, "d": {}, "e": {}, "f": {}, "g": {}, "h": {}, "x": {"v": 2},
    }  # fmt: skip


async def test_attributes_become_batch_typed_attributes(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("typed")
    when = datetime(2023, 8, 12, 22, 30, 5, tzinfo=timezone.utc)
    member = Member(
        "u1",
        attributes={
            "plan": "gold",
            "age": 41,
            "score": 9.5,
            "optin": False,
            "tags": ["a", "b"],
            "birthday": when,
            "avatar": Url("https://example.com/a.png"),
        },
    )
    await backend.add_members("typed", [member])
    assert updates(emulators) == [
        [
            {
                "action": "add",
                "id": "u1",
                "attributes": {
                    "plan": "gold",
                    "age": 41,
                    "score": 9.5,
                    "optin": False,
                    "tags": ["a", "b"],
                    "date(birthday)": "2023-08-12T22:30:05Z",
                    "url(avatar)": "https://example.com/a.png",
                },
            }
        ]
    ]
    requests_validate(emulators)


@pytest.mark.parametrize("codec", ["fast", "stdlib"])
async def test_every_operation_reaches_batch_as_written_with_either_codec(
    backend: BatchBackend, emulators: EmulatorServer, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each operation is encoded as it is read and the chunk's body is joined from the pieces.
    if codec == "stdlib":
        monkeypatch.setattr(_wire, "_fast_dumps", None)
    elif _wire._fast_dumps is None:
        pytest.skip("orjson is not installed")
    await backend.create_audience("codec")
    ops = [
        Add(Member('quote"back\\slash', attributes={"note": 'say "hi"\n', "n": 1})),
        Add(Member("ü-ñ-日本", attributes={"city": "Zürich", "tags": ["é"]})),
        Add(Member("plain")),
        Remove("gone"),
    ]
    await backend.apply("codec", ops)
    assert updates(emulators) == [
        [
            {"action": "add", "id": 'quote"back\\slash',
             "attributes": {"note": 'say "hi"\n', "n": 1}},
            {"action": "add", "id": "ü-ñ-日本", "attributes": {"city": "Zürich", "tags": ["é"]}},
            {"action": "add", "id": "plain"},
            {"action": "remove", "id": "gone"},
        ]
    ]  # fmt: skip
    requests_validate(emulators)


@pytest.mark.parametrize(
    ("attributes", "needle"),
    [
        ({f"a{i}": i for i in range(16)}, "at most 15"),
        ({"when": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"blob": b"bytes"}, "unsupported attribute type bytes"),
        ({"nested": {"a": 1}}, "unsupported attribute type dict"),
        ({"mixed": ["a", 1]}, "holds strings"),
        ({"nan": float("nan")}, "finite"),
        ({"bad name": 1}, "attribute names"),
        ({"url": Url("ftp://x")}, "http"),
    ],
)
async def test_bad_attributes_are_refused_before_sending(
    backend: BatchBackend, emulators: EmulatorServer, attributes: dict[str, Any], needle: str
) -> None:
    await backend.create_audience("strict")
    with pytest.raises(ValidationError) as caught:
        await backend.add_members(
            "strict", [Member("ok"), Member("bad-one", attributes=attributes)]
        )
    assert caught.value.ids == ("bad-one",)
    assert needle in str(caught.value)
    assert updates(emulators) == []


async def test_bad_ids_and_names_are_refused_before_sending(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("strict")
    with pytest.raises(ValidationError):
        await backend.add_members("strict", [Member("x" * 1025)])
    with pytest.raises(ValidationError):
        await backend.add_members("has space", [Member("x")])
    with pytest.raises(ValidationError):
        await backend.create_audience("bad/name")
    assert [r.path for r in emulators.batch.requests] == [
        "/2.3/audiences/create",
        "/2.3/audiences/view",
        "/2.3/audiences/view",
    ]


async def test_polls_only_as_often_as_needed(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend(chunk_size=100)
    await backend.create_audience("polled")
    emulators.batch.config.index_polls = 3
    emulators.batch.requests.clear()
    result = await backend.add_members("polled", (Member(f"u{i}") for i in range(250)))
    views = [r for r in emulators.batch.requests if r.path.endswith("/view")]
    assert result.polls == len(views) == 3 * 3  # three chunks, three views each


async def test_wait_false_returns_tokens_and_another_backend_resumes(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    first = make_backend(chunk_size=4)
    await first.create_audience("resume")
    sent = await first.add_members("resume", (Member(f"u{i}") for i in range(10)), wait=False)
    assert [len(p.ids) for p in sent.pending] == [4, 4, 2]
    assert emulators.batch.members("resume") == {}
    await first.aclose()

    second = make_backend()  # as after a crash: a new process with the saved pending chunks
    done = await second.wait(sent.pending)
    assert done.applied == 10
    assert done.ok
    assert len(emulators.batch.members("resume")) == 10
    assert len(updates(emulators)) == 3  # nothing was sent again


async def test_a_poll_timeout_carries_the_tokens(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend(chunk_size=5, poll=PollPolicy(max_wait=3, interval=1))
    await backend.create_audience("slow")
    emulators.batch.config.index_polls = 1_000
    with pytest.raises(PollTimeoutError) as caught:
        await backend.add_members("slow", (Member(f"u{i}") for i in range(12)))
    assert len(caught.value.pending) == 3
    result = caught.value.result
    assert result is not None
    assert result.pending_count == 12
    emulators.batch.apply_pending()
    resumed = await backend.wait(result)
    assert resumed.applied == 12
    assert len(updates(emulators)) == 3


async def test_replaced_writes_are_reported_not_ignored(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("swap")
    sent = await backend.add_members("swap", [Member("a"), Member("b")], wait=False)
    await backend.replace_members("swap", [Member("z")])
    result = await backend.wait(sent, raise_on_failure=False)
    assert set(result.failed) == {"a", "b"}
    assert all(isinstance(e, WriteReplacedError) for e in result.failed.values())
    assert emulators.batch.members("swap") == {"z": {}}


async def test_replace_refuses_more_than_10000_before_sending(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("huge")
    with pytest.raises(ValidationError, match="at most 10,000"):
        await backend.replace_members("huge", (Member(f"u{i}") for i in range(10_001)))
    result = await backend.replace_members("huge", (Member(f"u{i}") for i in range(10_000)))
    assert result.applied == 10_000
    replaces = [r for r in emulators.batch.requests if r.path.endswith("/replace")]
    assert len(replaces) == 1
    requests_validate(emulators)


async def test_members_cannot_be_listed(backend: BatchBackend) -> None:
    with pytest.raises(UnsupportedFeatureError, match="state store"):
        backend.iter_members("any")


async def test_faults_are_retried_and_nothing_is_lost(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    backend = make_backend(chunk_size=1_000, concurrency=4)
    await backend.create_audience("flaky")
    emulators.batch.set_faults(
        FaultPlan(
            [
                Fault.http_status(429, "POST */update", calls=[1, 4]),
                Fault.http_status(503, "POST */update", calls=[2], timing=Timing.AFTER),
                Fault.drop("POST */update", calls=[6]),
                Fault.http_status(500, "GET */view", calls=[3]),
            ]
        )
    )
    result = await backend.add_members("flaky", (Member(f"u{i}") for i in range(8_000)))
    assert result.ok
    assert result.retries == 5
    assert len(emulators.batch.members("flaky")) == 8_000


async def test_errors_are_typed(make_backend: MakeBackend, emulators: EmulatorServer) -> None:
    bad = make_backend(api_key="wrong")
    with pytest.raises(AuthenticationError):
        await bad.get_audience("x")
    backend = make_backend()
    with pytest.raises(NotFoundError):
        await backend.get_audience("missing")
    await backend.create_audience("once")
    with pytest.raises(ConflictError):
        await backend.create_audience("once")


def test_keys_come_from_arguments_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCH_API_KEY", raising=False)
    monkeypatch.delenv("BATCH_PROJECT_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="BATCH_API_KEY"):
        BatchBackend()
    monkeypatch.setenv("BATCH_API_KEY", "k-from-env")
    with pytest.raises(ConfigurationError, match="BATCH_PROJECT_KEY"):
        BatchBackend()
    monkeypatch.setenv("BATCH_PROJECT_KEY", "p")
    backend = open_backend("batch", api_version="2.11")
    assert isinstance(backend, AudienceBackend)
    assert "k-from-env" not in repr(backend)
    assert repr(backend) == "<BatchBackend https://api.batch.com/2.11>"
    with pytest.raises(ConfigurationError):
        BatchBackend(api_version="3")


@pytest.mark.slow
async def test_a_million_operations_from_a_generator_make_100_update_calls(
    make_backend: MakeBackend, emulators: EmulatorServer
) -> None:
    emulators.batch.log_bodies = False
    emulators.batch.config.index_polls = 0
    backend = make_backend(concurrency=4)
    await backend.create_audience("million")

    def ops() -> Iterator[Add | Remove]:
        for i in range(1_000_000):  # one million distinct ids: 900,000 adds, 100,000 removes
            yield Remove(f"gone{i}") if i % 10 == 9 else Add(Member(f"u{i}"))

    result = await backend.apply("million", ops())
    assert result.chunks == 100
    calls = [r for r in emulators.batch.requests if r.path.endswith("/update")]
    assert len(calls) == 100
    assert result.applied == 1_000_000
    held = emulators.batch.members("million")
    assert len(held) == 900_000
    assert "u9" not in held
    assert "u999998" in held


# -- plain str ids: the fast path of add_members ---------------------------------------------------


async def test_str_ids_are_added_without_building_a_member(
    backend: BatchBackend, emulators: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backend.create_audience("ids")
    built = []
    make = Member.__init__

    def counting(self: Member, *args: Any, **kwargs: Any) -> None:
        built.append(args)
        make(self, *args, **kwargs)

    monkeypatch.setattr(Member, "__init__", counting)
    result = await backend.add_members("ids", (f"user-{i}" for i in range(12_345)))
    listed = await backend.add_members("ids", ["user-0", "user-99999"])

    assert built == []
    assert result.applied == 12_345
    assert listed.applied == 2
    assert sorted(len(ids) for ids in updates(emulators)) == [2, 2_345, 10_000]
    assert updates(emulators)[-1] == [
        {"action": "add", "id": "user-0"},
        {"action": "add", "id": "user-99999"},
    ]
    assert len(emulators.batch.members("ids")) == 12_346
    assert requests_validate(emulators) == 4  # create + 3 updates


async def test_a_list_with_one_bad_str_id_sends_nothing(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("ids")
    emulators.batch.requests.clear()
    too_long = "x" * 1025
    with pytest.raises(ValidationError) as caught:
        await backend.add_members("ids", ["user-1", too_long, "user-2"])

    assert [(p.id, p.message) for p in caught.value.problems] == [
        ("x" * 40, "longer than 1024 characters")
    ]
    assert emulators.batch.requests == []


async def test_a_too_long_str_id_in_a_stream_is_refused_before_its_chunk_is_sent(
    backend: BatchBackend, emulators: EmulatorServer
) -> None:
    await backend.create_audience("ids")
    with pytest.raises(ValidationError, match="longer than 1024 characters"):
        await backend.add_members("ids", (i for i in ["user-1", "y" * 2000]))
    assert updates(emulators) == []
