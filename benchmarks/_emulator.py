"""Start the emulators in a process of their own, so they never share a GIL with the client."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

from audiencekit.testing import Endpoint, Endpoints


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[Endpoints]:
    """Run ``python -m audiencekit.testing.emulator --port 0 --json ARGS`` until the block ends."""
    command = [sys.executable, "-m", "audiencekit.testing.emulator", "--port", "0", "--json"]
    process = subprocess.Popen(
        [*command, "--no-request-bodies", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ends = json.loads(process.stdout.readline())
        yield Endpoints({name: Endpoint(name, e["url"], e["options"]) for name, e in ends.items()})
    finally:
        process.terminate()
        process.communicate(timeout=10)  # reaps it and closes its pipe
