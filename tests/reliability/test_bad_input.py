"""Hundreds of generated bad inputs: each gets a ValidationError naming it, and the provider
receives nothing at all."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiencekit import Add, Member, Operation, Remove, ValidationError
from audiencekit.models import Url
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.testing import BatchEmulator, DexatelEmulator, FakeBackend

pytestmark = pytest.mark.anyio

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ODD_TEXT = st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "\u202e1234567", "٣٤٥٦٧٨٩٠", "\uff11\uff12\uff13"]
)

# -- what each provider must refuse ------------------------------------------------------------

bad_ids = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\n", min_size=1, max_size=5),
    st.sampled_from(["\ud800", "x\udc00"]),
    st.integers(),
    st.none(),
    st.binary(min_size=1, max_size=5),
    st.floats(allow_nan=False),
)
bad_numbers = st.one_of(
    bad_ids,
    st.text(alphabet="abcdefghij", min_size=1, max_size=12),
    st.from_regex(r"\+?[1-9][0-9]{0,5}", fullmatch=True),  # too short
    st.from_regex(r"\+?[1-9][0-9]{15,30}", fullmatch=True),  # too long
    st.from_regex(r"\+0[0-9]{7,12}", fullmatch=True),  # leading zero
    ODD_TEXT,
)
bad_dexatel_fields = st.one_of(
    st.dictionaries(st.sampled_from(["nickname", "email", "age", "Date"]), st.just("x"),
                    min_size=1, max_size=2),
    st.fixed_dictionaries({"first_name": st.text(min_size=33, max_size=40)}),
    st.fixed_dictionaries({"custom2": st.text(min_size=71, max_size=80)}),
    st.fixed_dictionaries({"last_name": st.one_of(st.integers(), st.booleans(), st.none())}),
    st.fixed_dictionaries({"first_name": st.sampled_from(["\ud800", "ok\udfff"])}),
)  # fmt: skip
bad_attribute_names = st.one_of(
    st.just(""),
    st.text(min_size=31, max_size=40, alphabet="abc"),
    st.sampled_from(["has space", "dash-name", "é", "date(x)", "url(y)", "a.b", "\ud800"]),
)
bad_attribute_values = st.one_of(
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=3),
    st.none(),
    st.just(datetime(2024, 1, 1)),  # naive
    st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    st.lists(st.one_of(st.integers(), st.none()), min_size=1, max_size=3),
    st.just(Url("ftp://nope")),
    st.sampled_from(["\ud800", "x\udfff"]),
)
bad_batch_members = st.one_of(
    st.builds(lambda k, v: {"id": "ok-id", "attributes": {k: v}},
              bad_attribute_names, st.just(1)),
    st.builds(lambda v: {"id": "ok-id", "attributes": {"field": v}}, bad_attribute_values),
    st.builds(lambda n: {"id": "ok-id", "attributes": {f"a{i}": i for i in range(n)}},
              st.integers(16, 40)),
    st.builds(lambda n: {"id": "x" * n, "attributes": {}}, st.integers(1025, 2000)),
)  # fmt: skip


def assemble(bad: Operation | Any, position: int) -> list[Any]:
    good: list[Any] = [Add(Member(f"+1555{i:07d}")) for i in range(5)] + [Remove("+15559999999")]
    good.insert(position % (len(good) + 1), bad)
    return good


async def refused(backend: Any, emulator: Any, ops: list[Any], audience: str) -> ValidationError:
    before = len(emulator.requests)
    with pytest.raises(ValidationError) as caught:
        await backend.apply(audience, ops)
    assert len(emulator.requests) == before  # nothing reached the provider
    assert caught.value.problems
    return caught.value


@pytest.fixture
async def dexatel() -> Any:
    emulator = DexatelEmulator()
    async with DexatelBackend(
        api_key="dexatel-emulator-key", base_url="http://dexatel.local/v1",
        http_client=emulator.client("http://dexatel.local/v1"),
    ) as backend:  # fmt: skip
        audience = await backend.create_audience("bad", channel="SMS")
        yield backend, emulator, audience.id


@pytest.fixture
async def batch() -> Any:
    """No rate governor: the in-process emulator has no limit, and every test here is about
    what is refused before any request (at Batch's 1 request/s, the audience's creation and
    its view alone would cost each test 2 s of waiting)."""
    emulator = BatchEmulator()
    async with BatchBackend(
        api_key="batch-emulator-rest-key", project_key="p", base_url="http://batch.local",
        http_client=emulator.client("http://batch.local"), rate_limit=None,
    ) as backend:  # fmt: skip
        await backend.create_audience("bad")
        yield backend, emulator, "bad"


@SETTINGS
@given(number=bad_numbers, fields=st.one_of(st.none(), bad_dexatel_fields),
       remove=st.booleans(), position=st.integers(0, 10))  # fmt: skip
async def test_dexatel_refuses_bad_numbers_and_fields(
    dexatel: Any, number: Any, fields: Any, remove: bool, position: int
) -> None:
    backend, emulator, audience = dexatel
    if fields is not None:  # a good number with bad fields
        bad: Any = Add(Member("+37477000001", attributes=fields))
        shown = "+37477000001"
    elif remove:
        bad, shown = Remove(number), number
    else:
        bad, shown = Add(Member(number)), number
    error = await refused(backend, emulator, assemble(bad, position), audience)
    if isinstance(shown, str) and shown.strip():
        assert shown in error.ids


@SETTINGS
@given(member=bad_batch_members, position=st.integers(0, 10))
async def test_batch_refuses_bad_attributes_and_ids(
    batch: Any, member: dict[str, Any], position: int
) -> None:
    backend, emulator, audience = batch
    bad = Add(Member(member["id"], attributes=member["attributes"]))
    error = await refused(backend, emulator, assemble(bad, position), audience)
    assert any(member["id"][:40] == found[:40] for found in error.ids)


class _FakeCalls:
    """A FakeBackend's recorded calls where ``refused`` looks for an emulator's requests."""

    def __init__(self, fake: FakeBackend) -> None:
        self.fake = fake

    @property
    def requests(self) -> list[Any]:
        return [c for c in self.fake.calls if c.method not in ("create_audience",)]


@pytest.fixture(params=["batch", "dexatel", "fake"])
async def every_backend(request: pytest.FixtureRequest, batch: Any, dexatel: Any) -> Any:
    if request.param == "batch":
        return batch
    if request.param == "dexatel":
        return dexatel
    fake = FakeBackend()
    audience = await fake.create_audience("bad")
    return fake, _FakeCalls(fake), audience.id


@SETTINGS
@given(bad_id=bad_ids, position=st.integers(0, 10))
async def test_every_backend_refuses_bad_ids(
    every_backend: Any, bad_id: Any, position: int
) -> None:
    backend, emulator, audience = every_backend
    await refused(backend, emulator, assemble(Remove(bad_id), position), audience)
    await refused(backend, emulator, assemble(Add(Member(bad_id)), position), audience)


async def test_the_refusals_name_every_bad_item(batch: Any) -> None:
    backend, emulator, audience = batch
    ops: list[Any] = [
        Add(Member("a", attributes={"bad name": 1})),
        Add(Member("b")),
        Remove(""),
        Add(Member("c", attributes={"when": datetime(2024, 1, 1)})),
        "not an operation",
    ]
    error = await refused(backend, emulator, ops, audience)
    assert error.ids == ("a", "", "c")
    assert len(error.problems) == 4
