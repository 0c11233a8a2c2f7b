"""The run history: one summary row per run in the state store, and the ids it did not apply.

Every ``sync``, ``migrate`` and :func:`retry` given a state store records itself through
:func:`recording`, the one place that does so; a caller's own bulk call (the command line's
``members add`` and ``members remove``) records itself the same way::

    async with recording(store, backend, audience_id, "add") as run:
        result = await backend.apply(audience_id, operations, raise_on_failure=False)
        await run.note(result, ops_from_members("add", members_again))

The row is written when the block ends, however it ends: returned (``ok``, ``partial`` or
``failed`` by what :meth:`RunLog.note` was told), raised (``failed``, with the exception's class
name), or cancelled (``interrupted``), in a shielded worker-thread call; a store that cannot
record it is logged, never raised over what the run itself raised or returned.

The ids recorded are those that ended ``failed`` or ``unknown`` (and ``pending``, as unknown),
each with its operation, a short reason (the error's class, HTTP status and the provider's code:
never a message, a key or a body) and, for an add, the attributes it wrote, so that
:func:`retry` can write it again. Attributes are stored for those ids only, and only when the
caller says what they were (sync and migrate always do; a bulk call through
:func:`ops_from_members`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Set
from datetime import datetime, timezone

import anyio
import anyio.to_thread
import attrs

from ..backend import AudienceBackend
from ..errors import APIStatusError, PartialFailureError, RunHistoryError
from ..models import Add, Attributes, BulkResult, Member, Operation, Remove
from ..progress import ProgressCallback
from ..state.base import RUN_KINDS, RunOutcome, RunRecord, StateStore, new_run_id, scope_of
from .apply import apply, journal_of
from .diff import SortedSpill, steps

__all__ = [
    "OpsLookup",
    "RetryReport",
    "RunLog",
    "ops_from_members",
    "reason_of",
    "recording",
    "retry",
]

logger = logging.getLogger("audiencekit.history")

#: What the ids a run did not apply were: given those ids, the operation (``"add"`` or
#: ``"remove"``) and, for an add, the attributes of each it knows (blocking: it runs in a worker
#: thread, and may read a file or a spill once).
OpsLookup = Callable[[Set[str]], Mapping[str, tuple[str, Attributes | None]]]

#: The longest reason kept for an id.
_REASON_LENGTH = 120


def reason_of(error: BaseException | str) -> str:
    """A short, secret-free reason for an id's failure: the error's class name, with the HTTP
    status and the provider's code of a status error (``"BadRequestError 400 [INVALID]"``)."""
    if isinstance(error, str):
        return error[:_REASON_LENGTH]
    reason = type(error).__name__
    if isinstance(error, APIStatusError):
        reason += f" {error.status}"
        if error.code is not None:
            reason += f" [{error.code}]"
    return reason[:_REASON_LENGTH]


def _missed(result: BulkResult) -> dict[str, tuple[str, str]]:
    """Id → (status, reason) of every id of ``result`` not applied."""
    found = {k: ("unknown", "pending") for chunk in result.pending for k in chunk.ids}
    found.update((k, ("unknown", reason_of(e))) for k, e in result.unknown.items())
    found.update((k, ("failed", reason_of(e))) for k, e in result.failed.items())
    return found


def _outcome(result: BulkResult) -> str:
    if result.ok:
        return "ok"
    return "failed" if result.applied == 0 else "partial"


def ops_from_members(op: str, members: Iterable[Member | Operation | str] | None) -> OpsLookup:
    """For a bulk add (``op="add"``) or removal (``"remove"``): the lookup that reads
    ``members`` once (the same members again: a list, a file read again) for the attributes of
    the adds that were not applied (the last of an id wins). Without ``members`` the adds are
    recorded without attributes, and a retry writes them without any."""
    if op not in ("add", "remove"):
        raise ValueError(f"a bulk call adds or removes, not {op!r}")

    def lookup(ids: Set[str]) -> dict[str, tuple[str, Attributes | None]]:
        found: dict[str, tuple[str, Attributes | None]] = dict.fromkeys(ids, (op, None))
        if op == "remove" or members is None:
            return found
        for item in members:
            member = item.member if isinstance(item, Add) else item
            if isinstance(member, Member) and member.id in found:
                found[member.id] = ("add", dict(member.attributes))
        return found

    return lookup


def ops_from_spill(wanted: SortedSpill, removed: Set[str]) -> OpsLookup:
    """For a diff (sync, migrate): an id it removed was a removal; any other was an add, of
    the attributes the wanted spill holds for it (read once, in id order)."""

    def lookup(ids: Set[str]) -> dict[str, tuple[str, Attributes | None]]:
        found: dict[str, tuple[str, Attributes | None]] = {
            k: ("remove", None) for k in ids if k in removed
        }
        adds = {k for k in ids if k not in removed}
        if adds:
            for member_id, record in wanted:
                if member_id in adds:
                    found[member_id] = ("add", dict(record[1] or {}))
                    adds.discard(member_id)
                    if not adds:
                        break
        found.update((k, ("add", None)) for k in adds)  # not in the spill: never happens
        return found

    return lookup


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions of an exception group (of any depth), or ``error`` itself (Python 3.10
    has no ExceptionGroup: a group is anything with a tuple of ``exceptions``)."""
    inner = getattr(error, "exceptions", None)
    if isinstance(inner, tuple) and inner and all(isinstance(e, BaseException) for e in inner):
        for each in inner:
            yield from _leaves(each)
    else:
        yield error


class RunLog:
    """One run being recorded (see :func:`recording`). ``audience`` may be set once the run
    knows the id of the audience it was given by name; ``counts`` may be added to; ``record``
    is the row written, once the block has ended."""

    def __init__(
        self,
        store: StateStore | None,
        *,
        kind: str,
        provider: str,
        scope: str,
        audience: str,
        parent: str | None = None,
        journalled: bool = False,
    ) -> None:
        self.store = store
        self.id = new_run_id()
        self.kind = kind
        self.provider = provider
        self.scope = scope
        self.audience = audience
        self.parent = parent
        self.journalled = journalled
        self.started_at = datetime.now(timezone.utc)
        self.counts: dict[str, int] = {}
        self.outcomes: list[RunOutcome] = []
        self.outcome: str | None = None
        self.error_type: str | None = None
        self.record: RunRecord | None = None

    @property
    def recorded(self) -> bool:
        """Whether the run is recorded (it has a store)."""
        return self.store is not None

    async def note(self, result: BulkResult, ops: OpsLookup | None = None) -> None:
        """What the run's bulk call did: its counts, its outcome (``ok``, ``partial``, or
        ``failed`` when nothing was applied), and the ids it did not apply, each with its
        operation and attributes as ``ops`` says (in a worker thread). Without ``ops`` the ids
        are recorded as adds without attributes."""
        self.outcome = _outcome(result)
        missed = _missed(result)
        self.counts.update(
            applied=result.applied,
            failed=len(result.failed),
            unknown=len(result.unknown),
            **({"pending": result.pending_count} if result.pending else {}),
        )
        if not self.recorded or not missed:
            self.outcomes = []
            return
        found: Mapping[str, tuple[str, Attributes | None]] = {}
        if ops is not None:
            try:
                found = await anyio.to_thread.run_sync(ops, missed.keys())
            except Exception as exc:  # the run's result stands: its ids are kept without
                logger.warning(  # their operations' details
                    "run %s: could not look up the operations of %d ids: %s", self.id,
                    len(missed), exc,
                )  # fmt: skip
        outcomes = []
        for k, (status, reason) in missed.items():
            op, attributes = found.get(k, ("add", None))
            outcomes.append(RunOutcome(k, op, status, reason, attributes))
        self.outcomes = outcomes

    def _raised(self, error: BaseException) -> None:
        leaves = list(_leaves(error))
        cancelled = anyio.get_cancelled_exc_class()
        self.error_type = type(leaves[0] if len(leaves) == 1 else error).__name__
        if all(isinstance(e, (cancelled, KeyboardInterrupt)) for e in leaves):
            self.outcome = "interrupted"
        elif self.outcome is None or not isinstance(error, PartialFailureError):
            self.outcome = "failed"
            result = getattr(error, "result", None)
            if isinstance(result, BulkResult) and "applied" not in self.counts:
                self.counts.update(applied=result.applied, failed=len(result.failed),
                                   unknown=len(result.unknown))  # fmt: skip

    def _finished(self) -> RunRecord:
        for name in ("applied", "failed", "unknown"):
            self.counts.setdefault(name, 0)
        self.record = RunRecord(
            id=self.id,
            kind=self.kind,
            provider=self.provider,
            scope=self.scope,
            audience=self.audience,
            started_at=self.started_at,
            ended_at=datetime.now(timezone.utc),
            outcome=self.outcome or "ok",
            counts=self.counts,
            error_type=self.error_type,
            parent=self.parent,
            journalled=self.journalled,
        )
        return self.record

    async def _write(self) -> None:
        store = self.store
        with anyio.CancelScope(shield=True):  # a cancelled run is recorded all the same
            try:
                record = self._finished()
                if store is not None:
                    await anyio.to_thread.run_sync(store.record_run, record, self.outcomes)
            except NotImplementedError:
                logger.debug("state store %s keeps no run history", store)
            except Exception as exc:  # never raised over what the run raised or returned
                logger.warning(
                    "could not record run %s in the state store %s: %s",
                    self.id, store.location if store is not None else None, exc,
                )  # fmt: skip


@contextlib.asynccontextmanager
async def recording(
    store: StateStore | None,
    backend: AudienceBackend,
    audience: str,
    kind: str,
    *,
    scope: str | None = None,
    parent: str | None = None,
    journalled: bool = False,
) -> AsyncIterator[RunLog]:
    """Record the run of the block in ``store``'s history (nothing without a store) as one of
    ``kind`` (``"sync"``, ``"add"``, ``"remove"``, ``"migrate"``, ``"retry"``) on ``audience``
    under ``scope`` (by default the backend's: its provider and account); ``parent`` is the
    run a retry retries. Tell the :class:`RunLog` what the bulk call did with
    :meth:`RunLog.note`; the row is written when the block ends, however it ends (see the
    module's documentation)."""
    if kind not in RUN_KINDS:
        raise ValueError(f"a run's kind is one of {', '.join(RUN_KINDS)}, not {kind!r}")
    run = RunLog(
        store,
        kind=kind,
        provider=backend.provider,
        # A backend without an account (no store, no scope) runs unrecorded, as before.
        scope=scope if scope is not None else scope_of(backend) if store is not None else "",
        audience=audience,
        parent=parent,
        journalled=journalled,
    )
    try:
        yield run
    except BaseException as exc:
        run._raised(exc)
        raise
    finally:
        await run._write()


# -- retry ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RetryReport:
    """What :func:`retry` did: the run it retried (``retried``), its own run (``run``, as
    recorded), how many adds and removals it sent again, and the bulk call's ``result``."""

    retried: RunRecord
    run: RunRecord
    added: int
    removed: int
    result: BulkResult

    @property
    def sent(self) -> int:
        return self.added + self.removed


async def retry(
    backend: AudienceBackend,
    store: StateStore,
    run_id: str,
    *,
    scope: str | None = None,
    on_progress: ProgressCallback | None = None,
    raise_on_failure: bool = False,
) -> RetryReport:
    """Write again the ids that run ``run_id`` (its id, or a unique prefix of it) recorded
    as failed or unknown: each add with the attributes it wrote, each removal; only those ids,
    not the whole run. The retry is a run of its own (kind ``"retry"``, its ``parent`` the run
    retried), recorded with the ids that failed again.

    The run must be one of the backend's provider and account (``scope``: by default the
    backend's), else :class:`~audiencekit.errors.RunHistoryError`, as for an id no run has or
    one that several runs' ids start with. A run that kept the audience's journal (a sync, a
    migrate) is retried under the audience's lease and journalled, so that the next sync knows
    what the retry wrote and does not send it again. ``raise_on_failure`` raises
    :class:`~audiencekit.PartialFailureError` when an id fails again (once recorded).

    A retry writes what the run wanted at the time: after a later sync of the same audience
    has changed what is wanted, sync again instead.
    """
    parent = await anyio.to_thread.run_sync(store.run, run_id)
    if parent is None:
        raise RunHistoryError(f"no run has an id starting with {run_id!r}", run=run_id)
    expected = scope if scope is not None else scope_of(backend)
    if parent.provider != backend.provider or parent.scope != expected:
        raise RunHistoryError(
            f"run {parent.id} wrote to {parent.scope}, not {expected}: retry it with a "
            f"backend of that provider and account",
            run=parent.id,
            scope=parent.scope,
        )
    sent = {"add": 0, "remove": 0}

    async def operations() -> AsyncIterator[Operation]:
        async for page in steps(store.run_outcomes(parent.id)):
            for item in page:
                sent[item.op] += 1
                yield (Add(Member(item.id, attributes=item.attributes or {}))
                       if item.op == "add" else Remove(item.id))  # fmt: skip

    def again(ids: Set[str]) -> dict[str, tuple[str, Attributes | None]]:
        return {o.id: (o.op, o.attributes) for o in store.run_outcomes(parent.id) if o.id in ids}

    async with recording(store, backend, parent.audience, "retry", scope=parent.scope,
                         parent=parent.id, journalled=parent.journalled) as run:  # fmt: skip
        state = store if parent.journalled else None
        async with journal_of(state, parent.scope, parent.audience) as journal:
            result = await apply(backend, parent.audience, operations(), journal,
                                 on_progress=on_progress)  # fmt: skip
        await run.note(result, again)
        run.counts.update(sent=sent["add"] + sent["remove"], added=sent["add"],
                          removed=sent["remove"])  # fmt: skip
        if raise_on_failure:
            result.raise_for_failures()
    assert run.record is not None
    return RetryReport(retried=parent, run=run.record, added=sent["add"], removed=sent["remove"],
                       result=result)  # fmt: skip
