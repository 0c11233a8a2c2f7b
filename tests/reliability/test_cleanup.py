"""After any failure: connections closed, no task left behind, no ResourceWarning."""

from __future__ import annotations

import gc
import socket
import warnings

import anyio
import pytest

from audiencekit import APIConnectionError, AuthenticationError, Member, PartialFailureError
from audiencekit.options import PollPolicy, RetryPolicy
from audiencekit.providers.batch import BatchBackend
from audiencekit.providers.dexatel import DexatelBackend
from audiencekit.testing import EmulatorServer, InstantClock

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_failures_leave_nothing_open(
    audiencekit_emulators: EmulatorServer, audiencekit_clock: InstantClock
) -> None:
    ends = audiencekit_emulators.endpoints
    quick = {"sleep": audiencekit_clock.sleep, "clock": audiencekit_clock,
             "retry": RetryPolicy(max_retries=1)}  # fmt: skip
    clients = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        # nobody listening
        async with BatchBackend(
            api_key="k", project_key="p", base_url=f"http://127.0.0.1:{free_port()}", **quick
        ) as dead:
            clients.append(dead.client.transport._client)
            with pytest.raises(PartialFailureError) as refused:
                await dead.add_members("a", [Member("x")])
            assert isinstance(refused.value.result.failed["x"], APIConnectionError)

        # a wrong key
        async with DexatelBackend(api_key="wrong", base_url=ends.dexatel_url, **quick) as bad:
            clients.append(bad.client.transport._client)
            with pytest.raises(AuthenticationError):
                await bad.create_audience("a", channel="SMS")

        # cancelled in the middle of waiting for indexing (on the real clock, with a governor
        # and the shared budget, at a ceiling that has every update sent well before the
        # cancel: at Batch's 1 request/s the cancel found it waiting for its turn instead)
        audiencekit_emulators.batch.config.index_polls = 10_000
        async with BatchBackend(api_key=ends.batch_key, project_key=ends.batch_project,
                                base_url=ends.batch_url, rate_limit=1_000.0,
                                poll=PollPolicy(max_wait=600, interval=0.01)) as slow:  # fmt: skip
            clients.append(slow.client.transport._client)
            audiencekit_emulators.batch.config.index_polls = 0
            await slow.create_audience("slow")
            audiencekit_emulators.batch.config.index_polls = 10_000
            with anyio.move_on_after(0.3) as scope:
                await slow.add_members("slow", (Member(f"u{i}") for i in range(25_000)))
            assert scope.cancelled_caught

        gc.collect()
    assert all(client.is_closed for client in clients)
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
