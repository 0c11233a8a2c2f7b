"""Workflows over any backend: ``sync`` an audience to a desired set, ``migrate`` one to another.

Both send only what is needed: ``sync`` sends the difference between the desired members and
what the provider holds (its own listing where it has one, the state store where it has none);
``migrate`` streams a source audience into a target and, with a state store, resumes an
interrupted run where it stopped, without sending any chunk twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import attrs

from ._base import prepared_members
from ._bulk import ChunkAccepted, ChunkDone, ChunkSent, ProgressCallback, ProgressEvent
from ._resolve import resolve_audience
from .backend import AudienceBackend, Members
from .errors import (
    ConfigurationError,
    NotFoundError,
    Problem,
    ValidationError,
)
from .models import Add, BulkResult, Channel, Member, Operation, PendingChunk, Remove
from .state import StateStore, fingerprint

__all__ = ["MigrationReport", "SyncReport", "migrate", "sync"]

Mapper = Callable[[Member], Member]


@attrs.frozen(kw_only=True)
class SyncReport:
    """What ``sync`` did: how many members it added, changed, removed and left alone."""

    added: int
    changed: int
    removed: int
    unchanged: int
    result: BulkResult

    @property
    def sent(self) -> int:
        return self.added + self.changed + self.removed


def _same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    # An upsert sets the attributes it is given and leaves the others: equal where desired says.
    return all(current.get(k) == v for k, v in desired.items())


async def sync(
    backend: AudienceBackend,
    audience_id: str,
    desired: Members,
    *,
    create: bool = False,
    channel: Channel | str | None = None,
    state: StateStore | None = None,
    scope: str | None = None,
    on_progress: ProgressCallback | None = None,
    raise_on_failure: bool = True,
) -> SyncReport:
    """Make the audience hold exactly ``desired``, sending only the difference.

    The audience is given by id or by name; with ``create`` a missing one is created
    (``channel`` for Dexatel). A backend that can list its members is compared with its own
    listing; one that cannot (Batch) needs ``state``, which records what was applied (under
    ``scope``, by default the provider's name) so that the next sync knows it. A second
    identical sync sends nothing. Holds the desired set and the current one in memory (ids and
    attributes).
    """
    wanted = await prepared_members(backend, desired)
    if not backend.capabilities.list_members and state is None:
        raise ConfigurationError(
            f"{backend.provider} cannot list the members of an audience: pass a StateStore "
            "so that sync knows what it pushed before"
        )
    found, _ = await resolve_audience(backend, audience_id, create=create, channel=channel)
    audience_id = found.id
    scope = scope or backend.provider
    attributes: dict[str, Mapping[str, Any]] | None = None
    fingerprints: dict[str, str] | None = None
    if backend.capabilities.list_members:
        attributes = {m.id: m.attributes async for m in backend.iter_members(audience_id)}
        current: Mapping[str, object] = attributes
    else:
        assert state is not None
        fingerprints = await anyio.to_thread.run_sync(state.pushed, scope, audience_id)
        current = fingerprints

    ops: list[Operation] = []
    added = changed = unchanged = 0
    for member_id, member in wanted.items():
        if member_id not in current:
            added += 1
        elif (
            _same(attributes[member_id], member.attributes)
            if attributes is not None
            else fingerprints is not None
            and fingerprints[member_id] == fingerprint(member.attributes)
        ):
            unchanged += 1
            continue
        else:
            changed += 1
        ops.append(Add(member))
    removals = [Remove(member_id) for member_id in current if member_id not in wanted]
    ops += removals

    result = await backend.apply(audience_id, ops, on_progress=on_progress, raise_on_failure=False)
    if state is not None:
        _remember(state, scope, audience_id, ops, result)
    report = SyncReport(
        added=added, changed=changed, removed=len(removals), unchanged=unchanged, result=result
    )
    if raise_on_failure:
        result.raise_for_failures()
    return report


def _remember(
    state: StateStore, scope: str, audience_id: str, ops: list[Operation], result: BulkResult
) -> None:
    """Record what is known to be applied. An add whose outcome is unknown is forgotten (the
    next sync sends it again); a failed one leaves the record as it was."""
    present: dict[str, str] = {}
    absent: list[str] = []
    for op in ops:
        if op.id in result.failed:
            continue
        if op.id in result.unknown:
            if isinstance(op, Add):
                absent.append(op.id)
            continue
        if isinstance(op, Add):
            present[op.id] = fingerprint(op.member.attributes)
        else:
            absent.append(op.id)
    state.record(scope, audience_id, present=present, absent=absent)


@attrs.frozen(kw_only=True)
class MigrationReport:
    """What ``migrate`` did, bucket by bucket, and whether the target's size checks out."""

    source_audience: str
    target_audience: str
    dry_run: bool
    resumed_from: int
    read: int
    sent: int
    applied: int
    failed: Mapping[str, str]
    unknown: Mapping[str, str]
    invalid: tuple[Problem, ...] = ()
    unchanged: int = 0
    target_size: int | None = None
    expected_size: int | None = None
    elapsed: float = 0.0

    @property
    def verified(self) -> bool | None:
        """True when the target holds as many members as expected (None: no expectation)."""
        if self.expected_size is None or self.target_size is None:
            return None
        return self.target_size == self.expected_size

    @property
    def ok(self) -> bool:
        return not (self.failed or self.unknown or self.invalid) and self.verified is not False


def default_mapping(member: Member) -> Member:
    """The member as the source lists it. From Dexatel: id = the number (E.164), attributes =
    the contact fields that are set (first_name, last_name, custom1, custom2)."""
    return member


class _Checkpoint:
    """The run's progress, saved at every step that changes it (each save is one transaction).

    Source members are numbered from 1 in listing order. ``cursor`` is how far, as one unbroken
    run from the start, the target has accepted them; ``ahead`` holds the accepted stretches
    beyond it (chunks finish out of order); ``pending`` the tokens of accepted chunks not yet
    confirmed. A resumed run waits for ``pending`` and skips the cursor and ``ahead``.
    """

    def __init__(
        self, state: StateStore | None, run: str, data: Mapping[str, Any], *, scope: str | None
    ) -> None:
        self.state = state
        self.run = run
        self.scope = scope  # where to record what was pushed (targets that cannot list)
        self.target: str = str(data.get("target", ""))
        self.created: bool = bool(data.get("created", False))
        self.cursor: int = int(data.get("cursor", 0))
        self.ahead: dict[int, int] = {int(a): int(b) for a, b in data.get("ahead", [])}
        self.pending: dict[str, dict[str, Any]] = dict(data.get("pending", {}))
        self.counts: dict[str, int] = dict(data.get("counts", {"sent": 0, "applied": 0}))
        self.failed: dict[str, str] = dict(data.get("failed", {}))
        self.unknown: dict[str, str] = dict(data.get("unknown", {}))
        self.skip = sorted(self.ahead.items())  # what the previous runs already covered
        self._positions: list[tuple[int, int]] = []  # (operation number, source position)
        self._spans: dict[int, tuple[int, int]] = {}  # chunk -> source positions it covers
        self._fingerprints: dict[int, dict[str, str]] = {}  # chunks in flight
        self._unsent: dict[str, str] = {}  # fingerprints of operations read, not yet sent

    def save(self) -> None:
        if self.state is not None:
            self.state.save_checkpoint(
                self.run,
                {
                    "target": self.target,
                    "created": self.created,
                    "cursor": self.cursor,
                    "ahead": sorted(self.ahead.items()),
                    "pending": self.pending,
                    "counts": self.counts,
                    "failed": self.failed,
                    "unknown": self.unknown,
                },
            )

    async def members(self, source: AsyncIterator[Member]) -> AsyncIterator[Member]:
        """The source members not covered yet, numbering what is handed on."""
        position = number = 0
        skip = iter(self.skip)
        stretch = next(skip, None)
        async for member in source:
            position += 1
            while stretch is not None and stretch[1] < position:
                stretch = next(skip, None)
            if position <= self.cursor or (stretch is not None and stretch[0] <= position):
                continue
            number += 1
            self._positions.append((number, position))
            yield member

    def remember(self, op: Add, canonical: Callable[[Operation], Operation]) -> Add:
        """Note what ``op`` sets, in the target's canonical form, to record it in the state
        store once its chunk is applied (a target that cannot list only)."""
        if self.scope is not None:
            try:
                sent = canonical(op)
            except ValidationError:
                return op  # refused by the target's checks: the call fails before sending it
            assert isinstance(sent, Add)
            self._unsent[sent.id] = fingerprint(sent.member.attributes)
        return op

    def _position(self, number: int) -> int:
        for seen, position in self._positions:
            if seen == number:
                return position
            if seen > number:
                break
        raise AssertionError(f"operation {number} was not read")  # pragma: no cover

    def on_event(self, event: ProgressEvent) -> None:
        if isinstance(event, ChunkSent):
            span = (self._position(event.first), self._position(event.last))
            self._positions = [p for p in self._positions if p[0] > event.last]
            self._spans[event.chunk] = span
            self.counts["sent"] += event.size
            if self.scope is not None:
                unsent = self._unsent
                self._fingerprints[event.chunk] = {
                    k: fp for k in event.ids if (fp := unsent.pop(k, None)) is not None
                }
            return
        if isinstance(event, ChunkAccepted):
            self.pending[event.handle] = {"ids": list(event.ids)}
        elif isinstance(event, ChunkDone):
            self._settled(event)
        covered = self._spans.get(event.chunk)
        if covered is not None:
            self._cover(*covered)
        if isinstance(event, ChunkDone) and not event.pending:
            self._spans.pop(event.chunk, None)
        self.save()

    def _cover(self, first: int, last: int) -> None:
        if last <= self.cursor:
            return
        self.ahead[first] = max(self.ahead.get(first, 0), last)
        while self.cursor + 1 in self.ahead:
            self.cursor = self.ahead.pop(self.cursor + 1)

    def _settled(self, event: ChunkDone) -> None:
        if event.pending:
            return
        if event.handle is not None:
            self.pending.pop(event.handle, None)
        self.counts["applied"] += event.applied
        failed, unknown = set(event.failed_ids), set(event.unknown_ids)
        for key in event.ids:
            self.failed.pop(key, None)
            self.unknown.pop(key, None)
        self.failed.update((k, "failed") for k in failed)
        self.unknown.update((k, "unknown") for k in unknown)
        sent = self._fingerprints.pop(event.chunk, None)
        if sent is not None and self.state is not None and self.scope is not None:
            present = {k: fp for k, fp in sent.items() if k not in failed and k not in unknown}
            self.state.record(self.scope, self.target, present=present, absent=unknown)


def _run_id(source: AudienceBackend, source_audience: str, target: AudienceBackend,
            target_audience: str) -> str:  # fmt: skip
    return f"migrate:{source.provider}:{source_audience}->{target.provider}:{target_audience}"


async def migrate(
    source: AudienceBackend,
    source_audience: str,
    target: AudienceBackend,
    target_audience: str,
    *,
    create: bool = False,
    channel: Channel | str | None = None,
    mapping: Mapper | None = None,
    dry_run: bool = False,
    state: StateStore | None = None,
    resume: bool = False,
    run_id: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> MigrationReport:
    """Copy the members of ``source_audience`` into ``target_audience``.

    ``mapping`` turns each source member into a target member (one for one; the default keeps
    id and attributes). With ``create``, a missing target audience is created (``channel`` for
    Dexatel). ``dry_run`` reads and checks everything, sends nothing, and reports what would be
    sent. With a ``state`` store the run is checkpointed as it goes; after a crash or a
    cancellation, call again with ``resume=True`` to continue where it stopped: chunks already
    accepted are waited for, not sent again (this relies on the source listing its members in a
    stable order, as Dexatel does). At the end the target's size is checked.
    """
    source.capabilities.require(
        source.provider, "list_members", "a migration reads the source audience's members"
    )
    mapping = mapping or default_mapping
    run = run_id or _run_id(source, source_audience, target, target_audience)
    saved = state.checkpoint(run) if state is not None else None
    if saved is not None and not resume:
        raise ConfigurationError(
            f"run {run!r} was interrupted: pass resume=True to continue it, or clear its "
            "checkpoint (StateStore.clear_checkpoint) to start over"
        )
    if saved is None and resume:
        raise ConfigurationError(f"nothing to resume: no checkpoint for run {run!r}")
    start = anyio.current_time()

    if dry_run:
        return await _dry_run(source, source_audience, target, target_audience, mapping, state)

    scope = None if target.capabilities.list_members or state is None else target.provider
    checkpoint = _Checkpoint(state, run, saved or {}, scope=scope)
    source_found = (await resolve_audience(source, source_audience))[0]
    if not checkpoint.target:
        if channel is None and source_found.channel not in (None, Channel.UNKNOWN):
            channel = source_found.channel  # a new audience takes the source's channel
        found, checkpoint.created = await resolve_audience(
            target, target_audience, create=create, channel=channel
        )
        checkpoint.target = found.id
    target_id = checkpoint.target
    checkpoint.save()

    def progress(event: ProgressEvent) -> None:
        checkpoint.on_event(event)
        if on_progress is not None:
            on_progress(event)

    if checkpoint.pending:  # accepted before the interruption: wait, do not send again
        pending = [
            PendingChunk(handle=token, audience_id=target_id, ids=tuple(entry["ids"]))
            for token, entry in checkpoint.pending.items()
        ]
        result = await target.wait(pending, raise_on_failure=False)
        for chunk in pending:
            checkpoint.pending.pop(chunk.handle, None)
        checkpoint.counts["applied"] += result.applied
        checkpoint.failed.update((k, "failed") for k in result.failed)
        checkpoint.unknown.update((k, "unknown") for k in result.unknown)
        checkpoint.save()

    async def operations() -> AsyncIterator[Operation]:
        async for member in checkpoint.members(source.iter_members(source_found.id)):
            yield checkpoint.remember(Add(mapping(member)), target.prepare)

    resumed_from = checkpoint.cursor
    # A poll timeout propagates: the checkpoint holds the tokens, and resume=True waits for them.
    await target.apply(target_id, operations(), on_progress=progress, raise_on_failure=False)
    read = checkpoint.cursor

    target_size = (await target.get_audience(target_id)).size
    report = MigrationReport(
        source_audience=source_audience,
        target_audience=target_id,
        dry_run=False,
        resumed_from=resumed_from,
        read=read,
        sent=checkpoint.counts["sent"],
        applied=checkpoint.counts["applied"],
        failed=checkpoint.failed,
        unknown=checkpoint.unknown,
        target_size=target_size,
        expected_size=read - len(checkpoint.failed) if checkpoint.created else None,
        elapsed=anyio.current_time() - start,
    )
    if state is not None:
        state.clear_checkpoint(run)
    return report


async def _dry_run(
    source: AudienceBackend,
    source_audience: str,
    target: AudienceBackend,
    target_audience: str,
    mapping: Mapper,
    state: StateStore | None,
) -> MigrationReport:
    """Read and check every member; compare with what the target holds, when that is known."""
    known: Mapping[str, Any] = {}
    source_id = (await resolve_audience(source, source_audience))[0].id
    try:
        target_id = (await resolve_audience(target, target_audience))[0].id
    except NotFoundError:
        target_id = target_audience  # a run would create it (with create=True)
    else:
        if target.capabilities.list_members:
            known = {m.id: m.attributes async for m in target.iter_members(target_id)}
        elif state is not None:
            known = state.pushed(target.provider, target_id)
    read = would_send = unchanged = 0
    problems: list[Problem] = []
    async for member in source.iter_members(source_id):
        read += 1
        try:
            op = target.prepare(Add(mapping(member)))
        except ValidationError as exc:
            problems.extend(exc.problems)
            continue
        assert isinstance(op, Add)
        previous = known.get(op.id)
        same = previous is not None and (
            _same(previous, op.member.attributes)
            if isinstance(previous, Mapping)
            else previous == fingerprint(op.member.attributes)
        )
        if same:
            unchanged += 1
        else:
            would_send += 1
    return MigrationReport(
        source_audience=source_audience,
        target_audience=target_id,
        dry_run=True,
        resumed_from=0,
        read=read,
        sent=would_send,
        applied=0,
        failed={},
        unknown={},
        invalid=tuple(problems),
        unchanged=unchanged,
    )
