"""Run every registered provider's emulator: ``python -m audiencekit.testing.emulator --port 0``.

Prints, for each emulator, the ``export NAME=value`` lines of the environment variables its
provider reads (its base URL and keys: pasted into a shell, they make the command line and
``open_backend`` talk to it), then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..providers import get_provider, providers
from ._batch import BatchConfig, BatchEmulator
from ._faults import FaultPlan
from ._server import EmulatorServer, Endpoint

__all__ = ["main"]


def build_parser(prog: str = "python -m audiencekit.testing.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve local emulators of every registered provider's API on 127.0.0.1.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="the first emulator's port, the others on the next ones, in the order printed "
        "(default 0: free ports)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--index-delay",
        type=float,
        default=0.0,
        help="seconds before a Batch write is applied (default 0: at once)",
    )
    parser.add_argument(
        "--index-polls",
        type=int,
        default=0,
        help="views of its token before a Batch write is applied (default 0)",
    )
    parser.add_argument(
        "--batch-rate-limit",
        type=float,
        metavar="PER_SECOND",
        help="Batch answers 429 past this many requests a second per project (default: no limit)",
    )
    parser.add_argument(
        "--batch-retry-after",
        action="store_true",
        help="add a Retry-After header to Batch's 429 answers (Batch documents none)",
    )
    parser.add_argument("--faults", metavar="FILE", help="a JSON fault plan for every emulator")
    parser.add_argument(
        "--no-request-bodies",
        action="store_true",
        help="log requests without their bodies (less memory for long benchmarks)",
    )
    parser.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stop: threading.Event | None = None,
    prog: str = "python -m audiencekit.testing.emulator",
) -> int:
    args = build_parser(prog).parse_args(argv)
    plan = None
    if args.faults:
        with open(args.faults, encoding="utf-8") as handle:
            plan = FaultPlan.from_dict(json.load(handle))
    emulators = {p.name: p.build_emulator() for p in providers() if p.emulator is not None}
    for app in emulators.values():
        app.log_bodies = not args.no_request_bodies
        if plan is not None:
            app.set_faults(plan)
    batch = emulators.get("batch")
    if isinstance(batch, BatchEmulator):  # the --index-* and --batch-* options are Batch's
        batch.config = BatchConfig(
            index_delay=args.index_delay,
            index_polls=args.index_polls,
            rate_limit=args.batch_rate_limit,
            retry_after_header=args.batch_retry_after,
        )
    ports = {name: args.port + i if args.port else 0 for i, name in enumerate(emulators)}
    server = EmulatorServer(emulators=emulators, host=args.host, ports=ports)
    with server:
        ends = server.endpoints
        if args.json:
            print(json.dumps({name: _described(end) for name, end in ends.items()}), flush=True)
        else:
            for name, end in ends.items():
                print(f"# {name} emulator, {end.url}")
                print(*(f"export {k}={shlex.quote(v)}" for k, v in _variables(end).items()),
                      sep="\n")  # fmt: skip
            print("# paste the lines above into a shell to use the emulators there;\n"
                  "# GET <url>/_emulator/requests or /_emulator/state shows what one received "
                  "and holds; Ctrl-C stops them")  # fmt: skip
            sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            (stop or threading.Event()).wait()
    return 0


def _variables(end: Endpoint) -> dict[str, str]:
    """The environment variables the endpoint's provider reads (its registry entry's ``env``),
    set to connect to the endpoint."""
    env = get_provider(end.provider).env
    return {env[k]: str(v) for k, v in end.options.items() if k in env}


def _described(end: Endpoint) -> dict[str, Any]:
    """An endpoint as JSON: its URL, its options, the variables to set (``env``), and (for
    the built-in providers' scripts) ``key`` and ``project``."""
    described: dict[str, Any] = {"url": end.url, "options": dict(end.options),
                                 "env": _variables(end)}  # fmt: skip
    for short, option in (("key", "api_key"), ("project", "project_key")):
        if option in end.options:
            described[short] = end.options[option]
    return described


if __name__ == "__main__":
    raise SystemExit(main())
