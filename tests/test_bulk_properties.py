"""Property: whatever the input and the failures, every id ends in the bucket of its last chunk
(a chunk the provider refuses is split until only the refused ids fail)."""

from __future__ import annotations

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiencekit import Add, Member, Operation, Remove

from .support import FakeClock, TokenBackend, TokenServer

pytestmark = pytest.mark.anyio

IDS = st.sampled_from([f"id{i}" for i in range(12)])
OPS = st.lists(
    st.one_of(IDS.map(lambda i: Add(Member(i))), IDS.map(Remove)), min_size=0, max_size=40
)


def reference_chunks(ops: list[Operation], size: int) -> list[dict[str, Operation]]:
    """The chunking the engine promises, written the obvious way."""
    chunks: list[dict[str, Operation]] = [{}]
    for op in ops:
        current = chunks[-1]
        if op.id not in current and len(current) == size:
            chunks.append(current := {})
        current[op.id] = op
    return [c for c in chunks if c]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=OPS,
    size=st.integers(1, 5),
    concurrency=st.integers(1, 4),
    rejected=st.sets(IDS, max_size=3),
    broken=st.sets(IDS, max_size=3),
)
async def test_every_id_lands_in_the_bucket_of_its_last_chunk(
    ops: list[Operation], size: int, concurrency: int, rejected: set[str], broken: set[str]
) -> None:
    server = TokenServer(polls_to_apply=1, reorder=True)

    def fail(wire_ops: list[dict[str, object]]) -> httpx.Response | None:
        ids = {op["id"] for op in wire_ops}
        if ids & rejected:  # a definite refusal, naming the ids it refuses: failed
            named = ",".join(sorted(ids & rejected))
            return httpx.Response(400, json={"error_code": "BAD", "error_message": named})
        if ids & broken:  # a server error after sending: unknown
            return httpx.Response(503, json={"error_code": "DOWN", "error_message": "down"})
        return None

    server.fail = fail
    with respx.mock(assert_all_called=False) as router:
        server.mount(router)
        async with TokenBackend(
            clock=FakeClock(), chunk_size=size, concurrency=concurrency
        ) as backend:
            result = await backend.apply("aud", ops, raise_on_failure=False)

    def outcomes(keys: list[str]) -> dict[str, str]:
        """A refused chunk is halved until each refused id stands alone."""
        if set(keys) & rejected:
            if len(keys) == 1:
                return {keys[0]: "failed"}
            middle = len(keys) // 2
            return outcomes(keys[:middle]) | outcomes(keys[middle:])
        return dict.fromkeys(keys, "unknown" if set(keys) & broken else "applied")

    chunks = reference_chunks(ops, size)
    expected_failed: set[str] = set()
    expected_unknown: set[str] = set()
    last_chunk: dict[str, dict[str, Operation]] = {}
    last_outcome: dict[str, str] = {}
    applied = 0
    for chunk in chunks:
        for key, outcome in outcomes(list(chunk)).items():
            last_chunk[key] = chunk
            last_outcome[key] = outcome
            applied += outcome == "applied"
    expected_failed = {key for key, outcome in last_outcome.items() if outcome == "failed"}
    expected_unknown = {key for key, outcome in last_outcome.items() if outcome == "unknown"}

    assert set(result.failed) == expected_failed
    assert set(result.unknown) == expected_unknown
    assert not set(result.failed) & set(result.unknown)
    assert result.applied == applied
    assert result.operations == len(ops)
    assert result.chunks == len(chunks)
    # what the provider holds: every id whose last chunk went through is in its last state
    for key, chunk in last_chunk.items():
        if key not in expected_failed | expected_unknown:
            assert (key in server.members) == isinstance(chunk[key], Add)
