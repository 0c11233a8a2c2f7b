"""OpenTelemetry: one client span per HTTP attempt named by its template, nested under one span
per bulk call and per workflow run carrying its counts; duration histograms and id counters;
and no secret, member id, attribute or audience name anywhere in what is exported."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from audiencekit import Member, PartialFailureError
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.state import StateStore
from audiencekit.testing import EmulatorServer, Fault, FaultPlan, Timing
from audiencekit.workflows import migrate, sync

from ..conftest import Connect
from .conftest import Recorded

pytestmark = pytest.mark.anyio

DEXATEL_KEY = "dx-SECRET-9f3b27c1e4"
BATCH_KEY = "bt-SECRET-5a81d0c6f2"
PROJECT_KEY = "pj-SECRET-c47e19b3a0"
#: A password in a base URL: dropped by the transport, and never in telemetry either.
PASSWORD = "pg-SECRET-e2d9a417b8"
AUDIENCE = "aud-name-Kp3wq"
TARGET = "aud-target-Zr8mv"
SECRETS = (DEXATEL_KEY, BATCH_KEY, PROJECT_KEY, PASSWORD)
#: Parts of every member id and attribute value the tests send.
MEMBER_DATA = ("1202555", "cust-7Hq", "plan-Vv9", "Zelda-Qx", AUDIENCE, TARGET)

SPAN_NAME = re.compile(r"(GET|POST|PUT|DELETE) (/[a-z0-9._-]+|/\{[a-z_]+\})+")


def numbers(n: int, start: int = 0) -> list[Member]:
    return [
        Member(f"+1202555{i:04d}", attributes={"first_name": f"Zelda-Qx{i}"})
        for i in range(start, start + n)
    ]


def customers(n: int, start: int = 0) -> list[Member]:
    return [
        Member(f"cust-7Hq-{i}", attributes={"plan": "plan-Vv9"}) for i in range(start, start + n)
    ]


@pytest.fixture
def secret_emulators(emulators: EmulatorServer) -> EmulatorServer:
    emulators.dexatel.config.keys = {DEXATEL_KEY: "account"}
    emulators.batch.config.rest_keys = frozenset({BATCH_KEY})
    emulators.batch.config.projects = frozenset({PROJECT_KEY})
    return emulators


def with_password(url: str) -> str:
    return url.replace("http://", f"http://audiencekit:{PASSWORD}@", 1)


@pytest.fixture
def dexatel(connect: Connect, secret_emulators: EmulatorServer) -> DexatelBackend:
    url = secret_emulators.endpoints["dexatel"].options["base_url"]
    return connect(DexatelBackend, api_key=DEXATEL_KEY, base_url=with_password(url), concurrency=8)


@pytest.fixture
def batch(connect: Connect, secret_emulators: EmulatorServer) -> BatchBackend:
    url = secret_emulators.endpoints["batch"].options["base_url"]
    return connect(
        BatchBackend,
        api_key=BATCH_KEY,
        project_key=PROJECT_KEY,
        base_url=with_password(url),
        chunk_size=100,
        concurrency=4,
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite3") as store:
        yield store


def faults(emulators: EmulatorServer) -> None:
    """429s, 5xx, answers lost after the write took effect, dropped connections."""
    emulators.dexatel.set_faults(
        FaultPlan(
            [
                Fault.http_status(429, "POST */contacts", rate=0.05, retry_after=0.01),
                Fault.http_status(503, "POST */contacts", rate=0.03),
                Fault.http_status(500, "POST */contacts", rate=0.03, timing=Timing.AFTER),
                Fault.drop("POST */contacts", rate=0.02, timing=Timing.AFTER),
                Fault.http_status(503, "GET */contacts", rate=0.05),
                Fault.http_status(503, "DELETE */contacts/*", rate=0.05, timing=Timing.AFTER),
            ],
            seed=25,
        )
    )
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


def descends_from(span: ReadableSpan, ancestor: ReadableSpan, by_id: dict[int, Any]) -> bool:
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        found = by_id.get(parent.span_id)
        parent = found.parent if found is not None else None
    return False


def http_spans(otel: Recorded) -> list[ReadableSpan]:
    return [s for s in otel.spans if s.kind is SpanKind.CLIENT]


def only(otel: Recorded, name: str) -> ReadableSpan:
    found = [s for s in otel.spans if s.name == name]
    assert len(found) == 1, [s.name for s in otel.spans]
    return found[0]


async def full_run(
    dexatel: DexatelBackend, batch: BatchBackend, state: StateStore, emulators: EmulatorServer
) -> None:
    """Every kind of call of both providers, with faults on."""
    audience = await dexatel.create_audience(AUDIENCE, channel="SMS")
    faults(emulators)
    await dexatel.add_members(audience.id, numbers(150), raise_on_failure=False)
    await dexatel.remove_members(audience.id, [m.id for m in numbers(20)], raise_on_failure=False)
    assert len([m async for m in dexatel.iter_members(audience.id)]) >= 100
    await dexatel.get_audience(audience.id)
    await dexatel.rename_audience(audience.id, f"{AUDIENCE}-2")
    async for listed in dexatel.client.list_contacts(audience.id, page_size=10):
        contact = await dexatel.client.get_contact(audience.id, listed.id)
        break
    await dexatel.client.update_contact(audience.id, contact.id, first_name="Zelda-Qx-new")

    await batch.create_audience(AUDIENCE)
    await batch.add_members(AUDIENCE, customers(800))
    await batch.remove_members(AUDIENCE, [m.id for m in customers(50)])
    await sync(batch, AUDIENCE, customers(300, start=700), state=state)
    emulators.reset()
    emulators.dexatel.config.keys = {DEXATEL_KEY: "account"}
    emulators.batch.config.rest_keys = frozenset({BATCH_KEY})
    emulators.batch.config.projects = frozenset({PROJECT_KEY})
    source = await dexatel.create_audience(f"{AUDIENCE}-src", channel="SMS")
    await dexatel.add_members(source.id, numbers(120))
    faults(emulators)
    await migrate(dexatel, source.id, batch, TARGET, create=True, state=state)
    await dexatel.delete_audience(source.id)
    await batch.delete_audience(TARGET)


async def test_no_secret_and_no_member_data_in_any_span_or_metric(
    otel: Recorded,
    dexatel: DexatelBackend,
    batch: BatchBackend,
    state: StateStore,
    secret_emulators: EmulatorServer,
) -> None:
    await full_run(dexatel, batch, state, secret_emulators)
    spans = otel.spans
    assert len(http_spans(otel)) > 300
    assert {"DELETE", "GET", "POST", "PUT"} <= {
        s.attributes["http.request.method"] for s in http_spans(otel) if s.attributes
    }
    assert any(s.attributes and "error.type" in s.attributes for s in http_spans(otel))
    exported = "\n".join(s.to_json() for s in spans) + otel.metrics_json()
    for text in (*SECRETS, *MEMBER_DATA):
        assert text not in exported
    assert "url.full" not in exported
    # no Dexatel audience or contact id (UUIDs; span and trace ids are bare hex; the SDK's
    # resource names its process by one of its own)
    instance = str(spans[0].resource.attributes.get("service.instance.id", "-"))
    uuids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-", exported.replace(instance, ""))
    assert uuids == []
    assert "audiencekit:" not in exported  # the user of the base URL


async def test_every_http_span_name_is_a_template_without_ids(
    otel: Recorded,
    dexatel: DexatelBackend,
    batch: BatchBackend,
    state: StateStore,
    secret_emulators: EmulatorServer,
) -> None:
    await full_run(dexatel, batch, state, secret_emulators)
    names = {s.name for s in http_spans(otel)}
    assert all(SPAN_NAME.fullmatch(name) for name in names), sorted(names)
    dexatel_ids = {a["id"] for a in secret_emulators.dexatel.snapshot()["account"]["audiences"]}
    assert not any(i in name for i in dexatel_ids for name in names)
    assert {
        "POST /v1/audiences",
        "GET /v1/audiences/{audience_id}",
        "PUT /v1/audiences/{audience_id}",
        "DELETE /v1/audiences/{audience_id}",
        "POST /v1/audiences/{audience_id}/contacts",
        "GET /v1/audiences/{audience_id}/contacts",
        "GET /v1/audiences/{audience_id}/contacts/{contact_id}",
        "PUT /v1/audiences/{audience_id}/contacts/{contact_id}",
        "POST /2.3/audiences/create",
        "POST /2.3/audiences/update",
        "GET /2.3/audiences/view",
        "POST /2.3/audiences/remove",
    } <= names
    for span in http_spans(otel):
        assert span.attributes is not None
        assert span.name == f"{span.attributes['http.request.method']} " + str(
            span.attributes["url.template"]
        )
        assert span.attributes["server.address"] == "127.0.0.1"
        assert isinstance(span.attributes["server.port"], int)


async def test_http_spans_nest_under_the_sync_span_which_carries_its_counts(
    otel: Recorded, batch: BatchBackend, state: StateStore, secret_emulators: EmulatorServer
) -> None:
    await batch.create_audience(AUDIENCE)
    faults(secret_emulators)
    otel.exporter.clear()
    report = await sync(batch, AUDIENCE, customers(800), state=state)

    run = only(otel, "audiencekit.sync")
    assert run.kind is SpanKind.INTERNAL
    assert run.parent is None
    assert run.attributes is not None
    assert run.attributes["audiencekit.provider"] == "batch"
    result = report.result
    assert result.chunks == 8
    assert {
        key: run.attributes[f"audiencekit.{key}"]
        for key in ("ids.applied", "ids.failed", "ids.unknown", "chunks", "polls")
    } == {
        "ids.applied": result.applied,
        "ids.failed": len(result.failed),
        "ids.unknown": len(result.unknown),
        "chunks": result.chunks,
        "polls": result.polls,
    }
    assert run.status.status_code is not StatusCode.ERROR
    by_id = {s.context.span_id: s for s in otel.spans}
    attempts = http_spans(otel)
    assert all(descends_from(s, run, by_id) for s in attempts)
    bulk = [s for s in otel.spans if s.name == "audiencekit.apply"]
    assert len(bulk) == 1
    assert descends_from(bulk[0], run, by_id)
    updates = [s for s in attempts if s.name == "POST /2.3/audiences/update"]
    assert all(descends_from(s, bulk[0], by_id) for s in updates)
    # 8 chunks, 4 of whose tries failed (two 429s, a lost answer, a dropped connection)
    assert len(updates) == 12
    retried = [s for s in updates if s.attributes and "http.request.resend_count" in s.attributes]
    assert len(retried) == 4
    assert all(s.attributes and int(str(s.attributes["http.request.resend_count"])) > 0
               for s in retried)  # fmt: skip
    failed = [s for s in updates if s.status.status_code is StatusCode.ERROR]
    assert sorted(str(s.attributes and s.attributes["error.type"]) for s in failed) == [
        "429", "429", "503", "RemoteProtocolError"
    ]  # fmt: skip
    assert all(s.status.description is None for s in failed)
    refused = [s for s in failed if s.attributes and s.attributes["error.type"] == "429"]
    assert all(s.attributes and s.attributes["http.response.status_code"] == 429 for s in refused)
    dropped = [
        s for s in failed if s.attributes and "http.response.status_code" not in s.attributes
    ]
    assert len(dropped) == 1
    ok = [s for s in updates if s.status.status_code is not StatusCode.ERROR]
    assert all(s.attributes and s.attributes["http.response.status_code"] == 202 for s in ok)


async def test_the_migrate_span_carries_the_reports_counts(
    otel: Recorded,
    dexatel: DexatelBackend,
    batch: BatchBackend,
    state: StateStore,
    secret_emulators: EmulatorServer,
) -> None:
    source = await dexatel.create_audience(AUDIENCE, channel="SMS")
    await dexatel.add_members(source.id, numbers(250))
    faults(secret_emulators)
    otel.exporter.clear()
    report = await migrate(dexatel, source.id, batch, TARGET, create=True, state=state)
    assert report.ok

    run = only(otel, "audiencekit.migrate")
    assert run.attributes is not None
    assert run.attributes["audiencekit.provider"] == "batch"
    assert run.attributes["audiencekit.source.provider"] == "dexatel"
    assert run.attributes["audiencekit.ids.applied"] == report.applied == 250
    assert run.attributes["audiencekit.ids.failed"] == 0
    assert run.attributes["audiencekit.ids.unknown"] == 0
    assert run.attributes["audiencekit.chunks"] == 3
    assert int(str(run.attributes["audiencekit.polls"])) >= 3
    by_id = {s.context.span_id: s for s in otel.spans}
    assert all(descends_from(s, run, by_id) for s in http_spans(otel))
    assert {"GET /v1/audiences/{audience_id}/contacts", "POST /2.3/audiences/update"} <= {
        s.name for s in http_spans(otel)
    }


async def test_a_failed_bulk_call_marks_its_span_with_the_error_class_only(
    otel: Recorded, batch: BatchBackend, secret_emulators: EmulatorServer
) -> None:
    await batch.create_audience(AUDIENCE)
    secret_emulators.batch.set_faults(
        FaultPlan([Fault.http_status(400, "POST */update", calls=[1, 2, 3, 4, 5, 6, 7, 8])])
    )
    with pytest.raises(PartialFailureError) as caught:
        await batch.add_members(AUDIENCE, customers(1))
    call = only(otel, "audiencekit.add_members")
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description is None
    assert call.attributes is not None
    assert call.attributes["error.type"] == type(caught.value).__name__
    assert call.attributes["audiencekit.ids.failed"] == 1
    assert call.events == ()  # no exception event: its message names ids


async def test_metrics_count_ids_time_attempts_and_count_refusals(
    otel: Recorded, connect: Connect, secret_emulators: EmulatorServer
) -> None:
    url = secret_emulators.endpoints["batch"].options["base_url"]
    batch = connect(
        BatchBackend, api_key=BATCH_KEY, project_key=PROJECT_KEY, base_url=url, chunk_size=100,
        rate_limit=2.0,
    )  # fmt: skip
    await batch.create_audience(AUDIENCE)
    faults(secret_emulators)
    result = await batch.add_members(AUDIENCE, customers(500))
    removed = await batch.remove_members(AUDIENCE, [m.id for m in customers(100)])

    applied = otel.points("audiencekit.ids.applied")
    assert applied == [({"audiencekit.provider": "batch"}, result.applied + removed.applied)]
    assert otel.points("audiencekit.ids.failed") in ([], [({"audiencekit.provider": "batch"}, 0)])
    assert otel.points("audiencekit.rate.refusals") == [({"audiencekit.provider": "batch"}, 2)]
    waits = otel.points("audiencekit.rate.wait.duration")
    assert waits
    assert int(str(sum(int(str(v)) for _, v in waits))) > 0
    durations = otel.points("http.client.request.duration")
    statuses = {
        (a["http.request.method"], a["url.template"], a.get("http.response.status_code"),
         a.get("error.type"))
        for a, _ in durations
    }  # fmt: skip
    assert ("POST", "/2.3/audiences/update", 202, None) in statuses
    assert ("POST", "/2.3/audiences/update", 429, "429") in statuses
    assert ("GET", "/2.3/audiences/view", 500, "500") in statuses
    assert all(a["server.address"] == "127.0.0.1" for a, _ in durations)
    assert sum(int(str(v)) for _, v in durations) == len(http_spans(otel))
