"""``audiencekit demo``: the main job, end to end, on local emulators (no credentials).

Starts both emulators in a process of their own, with faults switched on (rate limits, server
errors, answers lost after the fact, Batch applying writes out of order), fills a Dexatel
audience with contacts, migrates it to Batch, and checks that Batch holds exactly the same
members with the same attributes.

Dexatel takes one request per contact, and the client spends about 1.5 ms of CPU on each: 20,000
of them cost a minute on a small machine before the migration starts. So the demo adds
``api_contacts`` of them through the API (every fault of Dexatel's writes shows there) and seeds
the rest straight into the emulator, saying so; ``api_contacts=contacts`` adds them all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import httpx

from .errors import ConfigurationError
from .models import Member
from .progress import ProgressCallback
from .providers.batch import BatchBackend
from .providers.dexatel import DexatelBackend
from .state import StateStore
from .workflows import migrate

__all__ = ["Reporter", "run_demo"]


class Reporter(Protocol):
    """Where the demo tells what it does: a note a line, and a progress callback per step (the
    command line's output is one)."""

    def note(self, message: str) -> None: ...

    def progress(
        self, label: str, total: int | None
    ) -> AbstractContextManager[ProgressCallback]: ...


#: Contacts a seed request carries.
SEED_BATCH = 5_000

FIRST_NAMES = ("Ani", "Ben", "Chloe", "Davit", "Elen", "Farid", "Gayane", "Hugo", "Iris", "Jon")
LAST_NAMES = ("Abrahamyan", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Grigoryan")

#: What goes wrong during the demo; the client must come through it with nothing lost.
FAULTS = {
    "seed": 2026,
    "faults": [
        {"kind": "status", "route": "POST */contacts", "status": 429, "rate": 0.02,
         "retry_after": 0.05},
        {"kind": "status", "route": "POST */contacts", "status": 503, "rate": 0.01},
        {"kind": "status", "route": "POST */contacts", "status": 500, "rate": 0.01,
         "timing": "after"},
        {"kind": "status", "route": "POST */audiences/update", "status": 503, "rate": 0.1},
        {"kind": "status", "route": "GET */contacts", "status": 503, "rate": 0.02},
        {"kind": "reorder", "route": "POST */audiences/update", "rate": 1.0},
    ],
}  # fmt: skip


@contextlib.contextmanager
def _emulators(workdir: str) -> Iterator[dict[str, Any]]:
    if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigurationError(
            'the demo runs the emulators: pip install "audiencekit[cli]" (or [emulator])'
        )
    faults = os.path.join(workdir, "faults.json")
    with open(faults, "w", encoding="utf-8") as handle:
        json.dump(FAULTS, handle)
    command = [sys.executable, "-m", "audiencekit.testing.emulator", "--port", "0", "--json",
               "--index-delay", "0.2", "--no-request-bodies", "--faults", faults]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise ConfigurationError("the emulators did not start")
        yield json.loads(line)
    finally:
        process.terminate()
        process.communicate(timeout=10)  # reaps it and closes its pipe


def _contacts(start: int, stop: int) -> Iterator[Member]:
    for i in range(start, stop):
        yield Member(
            f"+3747{i:07d}",
            attributes={
                "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
                "last_name": LAST_NAMES[i % len(LAST_NAMES)],
                "custom1": "vip" if i % 10 == 0 else "standard",
            },
        )


async def _seed(
    client: httpx.AsyncClient, url: str, audience_id: str, members: Iterator[Member]
) -> int:
    """Put ``members`` straight into the Dexatel emulator's audience (no provider request);
    return how many it added."""
    added = 0
    while batch := list(itertools.islice(members, SEED_BATCH)):
        body = {"audience_id": audience_id,
                "contacts": [{"number": m.id, **m.attributes} for m in batch]}  # fmt: skip
        answer = await client.post(f"{url}/_emulator/seed", json=body)
        answer.raise_for_status()
        added += int(answer.json()["added"])
    return added


async def run_demo(*, contacts: int, api_contacts: int, out: Reporter) -> dict[str, Any]:
    """Run the demo; return its summary (the numbers printed at the end). The first
    ``api_contacts`` contacts are added through Dexatel's API, the others seeded."""
    api_contacts = min(api_contacts, contacts)
    with tempfile.TemporaryDirectory() as workdir, _emulators(workdir) as ends:
        dexatel_url, batch_url = ends["dexatel"]["url"], ends["batch"]["url"]
        dexatel_root = dexatel_url.rsplit("/v1", 1)[0]
        out.note(f"emulators: Dexatel {dexatel_url}, Batch {batch_url}")
        async with (
            httpx.AsyncClient(timeout=60) as client,
            DexatelBackend(api_key=ends["dexatel"]["key"], base_url=dexatel_url,
                           concurrency=8) as dexatel,
            BatchBackend(api_key=ends["batch"]["key"], project_key=ends["batch"]["project"],
                         base_url=batch_url) as batch,
        ):  # fmt: skip
            audience = await dexatel.create_audience("demo-customers", channel="SMS")
            start = time.perf_counter()
            with out.progress("Dexatel: adding contacts", api_contacts) as progress:
                await dexatel.add_members(
                    audience.id, _contacts(0, api_contacts), on_progress=progress
                )
            fill_seconds = time.perf_counter() - start
            if api_contacts < contacts:
                out.note(f"Dexatel: seeding {contacts - api_contacts:,} more contacts straight "
                         "into the emulator (Dexatel takes one request a contact)")  # fmt: skip
            seeded = await _seed(
                client, dexatel_root, audience.id, _contacts(api_contacts, contacts)
            )

            start = time.perf_counter()
            with (
                StateStore(os.path.join(workdir, "state.sqlite3")) as state,
                out.progress("migrating to Batch", contacts) as progress,
            ):
                report = await migrate(dexatel, audience.id, batch, "demo_customers",
                                       create=True, state=state, on_progress=progress)  # fmt: skip
            migrate_seconds = time.perf_counter() - start

            expected = {m.id: dict(m.attributes) async for m in dexatel.iter_members(audience.id)}
            state_answer = await client.get(f"{batch_url}/_emulator/state")
            held = state_answer.json()[ends["batch"]["project"]]["demo_customers"]["members"]
            log = (await client.get(f"{batch_url}/_emulator/requests")).json()
            dexatel_log = (await client.get(f"{dexatel_root}/_emulator/requests")).json()
            fired = 0
            for url in (dexatel_root, batch_url):
                fired += sum((await client.get(f"{url}/_emulator/faults")).json()["fired"])
    return {
        "dexatel_contacts": len(expected),
        "dexatel_added": api_contacts,
        "dexatel_seeded": seeded,
        "dexatel_contact_calls": sum(
            1 for r in dexatel_log if r["method"] == "POST" and r["path"].endswith("/contacts")
        ),
        "batch_members": len(held),
        "fill_seconds": round(fill_seconds, 2),
        "migrate_seconds": round(migrate_seconds, 2),
        "batch_update_calls": sum(
            1 for r in log if r["path"].endswith("/update") and r["status"] == 202
        ),
        "batch_view_calls": sum(1 for r in log if r["path"].endswith("/view")),
        "faults_survived": fired,
        "report_verified": report.verified,
        "verified": report.ok and held == expected and len(expected) == contacts,
    }
