"""Fault plans: a seeded, declarative list of ways an emulator should misbehave.

A plan is data (it round-trips through JSON, so the command line and the ``/_emulator/faults``
route take the same thing as Python code). Each :class:`Fault` names what goes wrong, on which
requests (a method and a path pattern), and when: on the n-th matching call, at a rate, or both,
at most ``limit`` times. The same seed and the same requests give the same faults.
"""

from __future__ import annotations

import enum
import fnmatch
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import cattrs
import cattrs.gen

__all__ = ["Fault", "FaultKind", "FaultPlan", "Timing"]


class FaultKind(str, enum.Enum):
    """What goes wrong."""

    #: Answer with an error status (and the provider's error body).
    STATUS = "status"
    #: Close the connection without a complete response.
    DROP = "drop"
    #: Wait ``delay`` seconds, then answer normally.
    SLOW = "slow"
    #: Batch only: apply writes received close together in a shuffled order.
    REORDER = "reorder"


class Timing(str, enum.Enum):
    """Whether the request takes effect before the fault hits it."""

    #: The provider never processed the request (a clean refusal).
    BEFORE = "before"
    #: The provider processed the request, then the answer was lost: an ambiguous failure.
    AFTER = "after"


@attrs.frozen(kw_only=True)
class Fault:
    """One rule. ``route`` is ``"METHOD /path/pattern"`` (``*`` matches any run of characters,
    ``METHOD`` may be ``*``); ``calls`` lists 1-based indices among the calls this rule matches;
    ``rate`` is the chance for any other matching call (with neither, every matching call);
    ``limit`` caps how often it fires."""

    kind: FaultKind
    route: str = attrs.field(default="* *")
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0
    timing: Timing = Timing.BEFORE
    calls: tuple[int, ...] = ()
    rate: float = attrs.field(default=0.0)
    limit: int | None = None

    @route.validator
    def _check_route(self, _: object, value: str) -> None:
        if len(value.split(" ", 1)) != 2:
            raise ValueError(f"route must be 'METHOD /path', got {value!r}")

    @rate.validator
    def _check_rate(self, _: object, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {value}")

    @classmethod
    def http_status(
        cls,
        status: int,
        route: str = "* *",
        *,
        retry_after: float | None = None,
        timing: Timing = Timing.BEFORE,
        calls: Sequence[int] = (),
        rate: float = 0.0,
        limit: int | None = None,
    ) -> Fault:
        """Answer ``status`` (429, 500, 503, ...), optionally with a ``Retry-After``."""
        return cls(
            kind=FaultKind.STATUS,
            route=route,
            status=status,
            retry_after=retry_after,
            timing=timing,
            calls=tuple(calls),
            rate=rate,
            limit=limit,
        )

    @classmethod
    def drop(
        cls,
        route: str = "* *",
        *,
        timing: Timing = Timing.BEFORE,
        calls: Sequence[int] = (),
        rate: float = 0.0,
        limit: int | None = None,
    ) -> Fault:
        """Close the connection mid-answer."""
        return cls(
            kind=FaultKind.DROP, route=route, timing=timing, calls=tuple(calls), rate=rate,
            limit=limit,
        )  # fmt: skip

    @classmethod
    def slow(
        cls,
        delay: float,
        route: str = "* *",
        *,
        calls: Sequence[int] = (),
        rate: float = 0.0,
        limit: int | None = None,
    ) -> Fault:
        """Answer after ``delay`` seconds."""
        return cls(
            kind=FaultKind.SLOW, route=route, delay=delay, calls=tuple(calls), rate=rate,
            limit=limit,
        )  # fmt: skip

    @classmethod
    def reorder(cls, route: str = "POST */audiences/update") -> Fault:
        """Batch: apply concurrently received writes in a shuffled order."""
        return cls(kind=FaultKind.REORDER, route=route, rate=1.0)

    def matches(self, method: str, path: str) -> bool:
        want_method, want_path = self.route.split(" ", 1)
        return (want_method in ("*", method)) and fnmatch.fnmatchcase(path, want_path)


_converter = cattrs.Converter()
_converter.register_unstructure_hook(
    Fault, cattrs.gen.make_dict_unstructure_fn(Fault, _converter, _cattrs_omit_if_default=True)
)


@attrs.define
class _RuleState:
    seen: int = 0
    fired: int = 0


class FaultPlan:
    """An ordered list of faults with a seed; the first rule that fires on a request wins."""

    def __init__(self, faults: Iterable[Fault] = (), *, seed: int = 0) -> None:
        self.faults = tuple(faults)
        self.seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._states = [_RuleState() for _ in self.faults]

    def __repr__(self) -> str:
        return f"FaultPlan({list(self.faults)!r}, seed={self.seed})"

    def pick(self, method: str, path: str, *, kinds: Iterable[FaultKind] = ()) -> Fault | None:
        """The fault to apply to this request, if any (counts the call against every rule)."""
        only = set(kinds)
        chosen: Fault | None = None
        with self._lock:
            for fault, state in zip(self.faults, self._states, strict=True):
                if (only and fault.kind not in only) or not fault.matches(method, path):
                    continue
                state.seen += 1
                if chosen is not None or (fault.limit is not None and state.fired >= fault.limit):
                    continue
                always = not fault.calls and not fault.rate
                hit = state.seen in fault.calls or (fault.rate and self._rng.random() < fault.rate)
                if always or hit:
                    state.fired += 1
                    chosen = fault
        return chosen

    def has(self, kind: FaultKind, method: str, path: str) -> bool:
        """True when a rule of ``kind`` covers this route (for standing behaviours like REORDER)."""
        return any(f.kind is kind and f.matches(method, path) for f in self.faults)

    def shuffle(self, items: list[Any]) -> None:
        """Shuffle in place with the plan's seeded generator."""
        with self._lock:
            self._rng.shuffle(items)

    def fired(self) -> list[int]:
        """How often each rule has fired, in rule order."""
        with self._lock:
            return [state.fired for state in self._states]

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data."""
        return {"seed": self.seed, "faults": _converter.unstructure(list(self.faults))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        """Read a plan written by :meth:`to_dict` (or by hand: the same keys as :class:`Fault`)."""
        faults = _converter.structure(list(data.get("faults", [])), list[Fault])
        return cls(faults, seed=int(data.get("seed", 0)))
