"""A clock for tests: sleeping advances it at once, so retries and polls cost no real time."""

from __future__ import annotations

__all__ = ["InstantClock"]


class InstantClock:
    """Pass ``clock.sleep`` as ``sleep=`` and ``clock`` itself as ``clock=`` to audiencekit.

    Every sleep returns at once and moves the clock forward by its length; ``sleeps`` records them.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"<InstantClock now={self.now:g} after {len(self.sleeps)} sleeps>"

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import anyio.lowlevel

        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()
