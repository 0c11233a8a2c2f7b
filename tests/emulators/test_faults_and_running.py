"""Fault plans, inspection routes, and the three ways to run the emulators."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from audiencekit.testing import (
    BatchConfig,
    BatchEmulator,
    DexatelEmulator,
    EmulatorServer,
    Fault,
    FaultKind,
    FaultPlan,
    Timing,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def dexatel(audiencekit_emulators: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    ends = audiencekit_emulators.endpoints
    async with httpx.AsyncClient(
        base_url=ends.dexatel_url, headers={"X-Dexatel-Key": ends.dexatel_key}
    ) as client:
        yield client


@pytest.fixture
async def batch(audiencekit_emulators: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    ends = audiencekit_emulators.endpoints
    headers = {"Authorization": f"Bearer {ends.batch_key}", "X-Batch-Project": ends.batch_project}
    async with httpx.AsyncClient(base_url=f"{ends.batch_url}/2.3", headers=headers) as client:
        yield client


def root(client: httpx.AsyncClient, path: str) -> httpx.URL:
    return client.base_url.copy_with(path=path)


# -- the plan itself --------------------------------------------------------------------------


def test_a_plan_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        plan = FaultPlan([Fault.http_status(503, "POST /x", rate=0.3)], seed=seed)
        return [plan.pick("POST", "/x") is not None for _ in range(200)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert 30 < sum(run(1)) < 90


def test_nth_calls_routes_and_limits() -> None:
    plan = FaultPlan(
        [
            Fault.http_status(429, "POST */contacts", calls=[2, 3], retry_after=1),
            Fault.drop("* /v1/audiences/*", rate=1.0, limit=2),
        ]
    )
    picks = [plan.pick("POST", "/v1/audiences/a/contacts") for _ in range(5)]
    kinds = [None if p is None else (p.kind, p.status) for p in picks]
    # rule 1 fires on its 2nd and 3rd matching calls; rule 2 at most twice, when rule 1 did not
    assert kinds == [
        (FaultKind.DROP, 503),
        (FaultKind.STATUS, 429),
        (FaultKind.STATUS, 429),
        (FaultKind.DROP, 503),
        None,
    ]
    assert plan.pick("GET", "/v1/templates") is None
    assert plan.fired() == [2, 2]


def test_plans_round_trip_through_json() -> None:
    plan = FaultPlan(
        [
            Fault.http_status(503, "POST */update", rate=0.1, timing=Timing.AFTER),
            Fault.slow(0.5, calls=[1]),
            Fault.reorder(),
        ],
        seed=9,
    )
    again = FaultPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.faults == plan.faults
    assert again.seed == 9
    assert plan.to_dict()["faults"][1] == {"kind": "slow", "delay": 0.5, "calls": [1]}


@pytest.mark.parametrize(
    "bad", [{"kind": "status", "route": "no-method"}, {"kind": "status", "rate": 2}, {"kind": "x"}]
)
def test_bad_plans_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - cattrs wraps the cause
        FaultPlan.from_dict({"faults": [bad]})


# -- faults over HTTP ---------------------------------------------------------------------------


async def test_429_with_and_without_retry_after(
    dexatel: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audiencekit_emulators.dexatel.set_faults(
        FaultPlan(
            [
                Fault.http_status(429, "GET /v1/audiences", calls=[1], retry_after=2),
                Fault.http_status(429, "GET /v1/audiences", calls=[2]),
            ]
        )
    )
    first, second, third = [await dexatel.get("/audiences") for _ in range(3)]
    assert (first.status_code, first.headers["retry-after"]) == (429, "2")
    assert second.status_code == 429
    assert "retry-after" not in second.headers
    assert second.json()["errors"][0]["status"] == 429
    assert third.status_code == 200


async def test_a_5xx_after_processing_is_ambiguous(
    batch: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    emulator = audiencekit_emulators.batch
    emulator.set_faults(
        FaultPlan([Fault.http_status(500, "POST */update", calls=[1], timing=Timing.AFTER)])
    )
    await batch.post("/audiences/create", json={"name": "a", "type": "custom_ids"})
    response = await batch.post(
        "/audiences/update", json={"name": "a", "ids": [{"action": "add", "id": "x"}]}
    )
    assert response.status_code == 500
    assert set(response.json()) == {"error_code", "error_message"}
    assert emulator.members("a") == {"x": {}}  # it took effect all the same
    assert emulator.requests[-1].fault == "status:after"


async def test_a_5xx_before_processing_changes_nothing(
    batch: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    emulator = audiencekit_emulators.batch
    emulator.set_faults(FaultPlan([Fault.http_status(503, "POST */update", calls=[1])]))
    await batch.post("/audiences/create", json={"name": "a", "type": "custom_ids"})
    response = await batch.post(
        "/audiences/update", json={"name": "a", "ids": [{"action": "add", "id": "x"}]}
    )
    assert response.status_code == 503
    assert emulator.members("a") == {}


@pytest.mark.parametrize("timing", [Timing.BEFORE, Timing.AFTER])
async def test_dropped_connections(
    dexatel: httpx.AsyncClient, audiencekit_emulators: EmulatorServer, timing: Timing
) -> None:
    emulator = audiencekit_emulators.dexatel
    emulator.set_faults(FaultPlan([Fault.drop("POST /v1/audiences", calls=[1], timing=timing)]))
    with pytest.raises(httpx.RemoteProtocolError):
        await dexatel.post("/audiences", json={"data": {"name": "d", "channel": "SMS"}})
    names = [a["name"] for a in (await dexatel.get("/audiences")).json()["data"]]
    assert names == (["d"] if timing is Timing.AFTER else [])


async def test_slow_answers(
    dexatel: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    audiencekit_emulators.dexatel.set_faults(
        FaultPlan([Fault.slow(0.3, "GET /v1/templates", calls=[1])])
    )
    start = time.monotonic()
    assert (await dexatel.get("/templates")).status_code == 200
    slow = time.monotonic() - start
    start = time.monotonic()
    await dexatel.get("/templates")
    assert slow >= 0.3 > time.monotonic() - start


async def test_reordered_writes_are_applied_out_of_order(
    batch: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    emulator = audiencekit_emulators.batch
    emulator.set_faults(FaultPlan([Fault.reorder()], seed=3))
    await batch.post("/audiences/create", json={"name": "a", "type": "custom_ids"})
    outcomes = set()
    for attempt in range(12):
        # add then remove the same id in two calls; applied in arrival order it ends absent
        ops = [{"action": "add", "id": f"x{attempt}"}], [{"action": "remove", "id": f"x{attempt}"}]
        for ids in ops:
            await batch.post("/audiences/update", json={"name": "a", "ids": ids})
        await batch.get("/audiences/list")  # the next request applies the held writes
        outcomes.add(f"x{attempt}" in emulator.members("a"))
    assert outcomes == {True, False}


async def test_fault_plans_over_the_inspection_route(
    batch: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    plan = FaultPlan([Fault.http_status(503, "GET */list", calls=[1])], seed=4)
    put = await batch.put(root(batch, "/_emulator/faults"), json=plan.to_dict())
    assert put.status_code == 200
    assert (await batch.get("/audiences/list")).status_code == 503
    assert (await batch.get("/audiences/list")).status_code == 200
    shown = (await batch.get(root(batch, "/_emulator/faults"))).json()
    assert shown["fired"] == [1]
    bad = await batch.put(root(batch, "/_emulator/faults"), json={"faults": [{"kind": "?"}]})
    assert bad.status_code == 400


# -- inspection ---------------------------------------------------------------------------------


async def test_the_request_log_state_and_reset(
    batch: httpx.AsyncClient, audiencekit_emulators: EmulatorServer
) -> None:
    await batch.post("/audiences/create", json={"name": "a", "type": "custom_ids"})
    ids = [{"action": "add", "id": "u1", "attributes": {"k": "v"}}]
    await batch.post("/audiences/update", json={"name": "a", "ids": ids})
    log = (await batch.get(root(batch, "/_emulator/requests"))).json()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("POST", "/2.3/audiences/create", 202),
        ("POST", "/2.3/audiences/update", 202),
    ]
    assert log[1]["body"]["ids"] == ids
    state = (await batch.get(root(batch, "/_emulator/state"))).json()
    assert state["project_emulator"]["a"]["members"] == {"u1": {"k": "v"}}
    assert (await batch.post(root(batch, "/_emulator/reset"))).status_code == 204
    assert (await batch.get(root(batch, "/_emulator/state"))).json() == {}
    assert (await batch.get(root(batch, "/_emulator/requests"))).json() == []
    assert (await batch.get(root(batch, "/_emulator/nothing"))).status_code == 404


# -- running it -----------------------------------------------------------------------------------


async def test_in_process_mode_needs_no_socket() -> None:
    emulator = BatchEmulator(BatchConfig(index_polls=1))
    headers = {"Authorization": "Bearer batch-emulator-rest-key", "X-Batch-Project": "p"}
    async with emulator.client(headers=headers) as client:
        created = await client.post(
            "/2.3/audiences/create", json={"name": "a", "type": "custom_ids"}
        )
        assert created.status_code == 202
        emulator.set_faults(FaultPlan([Fault.drop("GET *", calls=[1])]))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/2.3/audiences/list")
    dexatel = DexatelEmulator()
    async with dexatel.client("http://dexatel.local/v1") as client:
        response = await client.get("/audiences", headers={"X-Dexatel-Key": "wrong"})
        assert response.status_code == 401


def test_the_module_serves_both_and_prints_their_urls() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "audiencekit.testing.emulator", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        ends = json.loads(line)
        assert ends["dexatel"]["url"].startswith("http://127.0.0.1:")
        response = httpx.get(
            f"{ends['dexatel']['url']}/audiences",
            headers={"X-Dexatel-Key": ends["dexatel"]["key"]},
        )
        assert response.status_code == 200
        batch = httpx.get(
            f"{ends['batch']['url']}/2.3/audiences/list",
            headers={
                "Authorization": f"Bearer {ends['batch']['key']}",
                "X-Batch-Project": ends["batch"]["project"],
            },
        )
        assert batch.json()["count"] == 0
    finally:
        process.terminate()
        process.communicate(timeout=10)


async def test_a_server_stops_and_frees_its_ports() -> None:
    server = EmulatorServer().start()
    url = server.endpoints.batch_url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/2.3/audiences/list")
    await anyio.lowlevel.checkpoint()
