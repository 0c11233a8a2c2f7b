"""Run both provider emulators: ``python -m audiencekit.testing.emulator --port 0``.

Prints each emulator's base URL and key, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Sequence

from ._batch import BatchConfig, BatchEmulator
from ._dexatel import DexatelEmulator
from ._faults import FaultPlan
from ._server import EmulatorServer

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m audiencekit.testing.emulator",
        description="Serve local emulators of the Dexatel and Batch APIs on 127.0.0.1.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="Dexatel's port; Batch listens on the next one (default 0: two free ports)",
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
    parser.add_argument("--faults", metavar="FILE", help="a JSON fault plan for both emulators")
    parser.add_argument(
        "--no-request-bodies",
        action="store_true",
        help="log requests without their bodies (less memory for long benchmarks)",
    )
    parser.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    return parser


def main(argv: Sequence[str] | None = None, *, stop: threading.Event | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = None
    if args.faults:
        with open(args.faults, encoding="utf-8") as handle:
            plan = FaultPlan.from_dict(json.load(handle))
    log_bodies = not args.no_request_bodies
    batch = BatchEmulator(
        BatchConfig(
            index_delay=args.index_delay,
            index_polls=args.index_polls,
            rate_limit=args.batch_rate_limit,
            retry_after_header=args.batch_retry_after,
        ),
        faults=plan,
        log_bodies=log_bodies,
    )
    dexatel = DexatelEmulator(faults=plan, log_bodies=log_bodies)
    server = EmulatorServer(
        dexatel=dexatel,
        batch=batch,
        host=args.host,
        dexatel_port=args.port,
        batch_port=args.port + 1 if args.port else 0,
    )
    with server:
        ends = server.endpoints
        if args.json:
            print(json.dumps(
                {
                    "dexatel": {"url": ends.dexatel_url, "key": ends.dexatel_key},
                    "batch": {
                        "url": ends.batch_url,
                        "key": ends.batch_key,
                        "project": ends.batch_project,
                    },
                }
            ), flush=True)  # fmt: skip
        else:
            print(f"dexatel  {ends.dexatel_url}  X-Dexatel-Key: {ends.dexatel_key}")
            print(
                f"batch    {ends.batch_url}  Authorization: Bearer {ends.batch_key}  "
                f"X-Batch-Project: {ends.batch_project}"
            )
            print("inspect  GET <url>/_emulator/requests | /_emulator/state; Ctrl-C to stop")
            sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            (stop or threading.Event()).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
