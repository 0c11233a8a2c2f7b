"""What one logical call cost, counted across its requests, retries and waits."""

from __future__ import annotations

import attrs

__all__ = ["CallStats"]


@attrs.define
class CallStats:
    """What one logical call cost: requests sent, retries among them, status probes while waiting.

    Passed down to :meth:`Transport.request` and ``wait_until``, so the counts survive a failure.
    """

    requests: int = 0
    retries: int = 0
    polls: int = 0
