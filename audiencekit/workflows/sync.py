"""Workflows over any backend: ``sync`` an audience to a desired set, ``migrate`` one to another.

Both send only what is needed: the difference between what is wanted (the desired members, or
the source audience) and what the target holds (its own listing where it has one, the state
store's journal where it has none). With a state store both hold the audience's lease and
journal every write, so that a crash, a cancel or an unknown outcome leaves a store from which
the next run converges to the exact wanted state.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from ..backend import AudienceBackend, Members
from ..core.base import aiterate, prepared_members
from ..core.clock import monotonic
from ..core.resolve import resolve_audience
from ..errors import CheckpointError, ConfigurationError, NotFoundError, Problem, ValidationError
from ..models import Add, BulkResult, Channel, Member, Operation, Remove
from ..progress import ProgressCallback
from ..state.base import Entry, StateStore, fingerprint, scope_of
from .journal import Journal, guarded, store_scope

__all__ = ["MigrationReport", "SyncReport", "migrate", "sync"]

Mapper = Callable[[Member], Member]


@attrs.frozen(kw_only=True)
class SyncReport:
    """What ``sync`` did: how many members it set out to add, change and remove (and left
    alone), and of each how many the provider applied (``applied["added"]``, ...); ``result``
    names every id that did not make it, and why."""

    added: int
    changed: int
    removed: int
    unchanged: int
    result: BulkResult
    #: Of the added, changed and removed members, how many were applied (by kind).
    applied: Mapping[str, int] = attrs.field(factory=dict)

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
    listing; one that cannot (Batch) needs ``state``, whose journal says what earlier runs
    wrote (under ``scope``: by default the provider and the backend's account, so that two
    accounts sharing one store never mix). With a state store the run holds the
    audience's lease (a concurrent run raises :class:`~audiencekit.AudienceBusyError`) and
    journals every write as it goes: after a crash, a cancel or an unknown outcome the next
    sync writes again whatever is not confirmed. A second identical sync sends nothing. Holds
    the desired set and the current one in memory (ids and attributes).
    """
    wanted = await prepared_members(backend, desired)
    if not backend.capabilities.list_members and state is None:
        raise ConfigurationError(
            f"{backend.provider} cannot list the members of an audience: pass a StateStore "
            "so that sync knows what it pushed before"
        )
    found, _ = await resolve_audience(backend, audience_id, create=create, channel=channel)
    audience_id = found.id
    scope = await store_scope(state, backend, scope) if state is not None else ""
    async with _guarded(state, scope, audience_id) as journal:
        held = await _holding(backend, audience_id, journal)
        if held.listed is None:  # compared by fingerprint: computed in a worker thread
            held.wanted = await anyio.to_thread.run_sync(_fingerprints, wanted)
        ops: list[Operation] = []
        changed: list[str] = []
        added = unchanged = 0
        for count, (member_id, member) in enumerate(wanted.items(), 1):
            if count % 4096 == 0:
                await anyio.lowlevel.checkpoint()  # 200,000 members do not hold the loop
            if not held.may_hold(member_id):
                added += 1
            elif held.holds(member_id, member.attributes):
                unchanged += 1
                continue
            else:
                changed.append(member_id)
            ops.append(Add(member))
        removals = [Remove(member_id) for member_id in held.ids() if member_id not in wanted]
        ops += removals
        result = await _apply(backend, audience_id, ops, journal, on_progress, held.wanted)
    missed = _not_applied(result)
    missed_changes = sum(1 for member_id in changed if member_id in missed)
    missed_removals = sum(1 for op in removals if op.id in missed)
    report = SyncReport(
        added=added,
        changed=len(changed),
        removed=len(removals),
        unchanged=unchanged,
        result=result,
        applied={
            "added": added - (len(missed) - missed_changes - missed_removals),
            "changed": len(changed) - missed_changes,
            "removed": len(removals) - missed_removals,
        },
    )
    if raise_on_failure:
        result.raise_for_failures()
    return report


def _not_applied(result: BulkResult) -> set[str]:
    """The ids of ``result`` that were not applied: failed, unknown, or still pending."""
    return {*result.failed, *result.unknown, *(k for chunk in result.pending for k in chunk.ids)}


@attrs.define
class _Held:
    """What an audience may hold: its own listing (id → attributes), or the journal's entries.

    An unsettled entry may or may not be held, with either attributes: it is written again.
    """

    listed: dict[str, Mapping[str, Any]] | None = None
    entries: dict[str, Entry] = attrs.field(factory=dict)
    #: Fingerprints of the wanted members, when computed ahead (id → fingerprint).
    wanted: dict[str, str] = attrs.field(factory=dict)

    def may_hold(self, member_id: str) -> bool:
        """Whether the member may be held already (its write is a change, not an add). An
        entry only ``intended`` was never accepted: an earlier run stopped before sending it."""
        if self.listed is not None:
            return member_id in self.listed
        entry = self.entries.get(member_id)
        return entry is not None and entry.status != "intended"

    def holds(self, member_id: str, attributes: Mapping[str, Any]) -> bool:
        """Whether the member is certainly held with these attributes."""
        if self.listed is not None:
            current = self.listed.get(member_id)
            return current is not None and _same(current, attributes)
        entry = self.entries.get(member_id)
        if entry is None or not entry.settled:
            return False
        wanted = self.wanted.get(member_id)
        return entry.fingerprint == (wanted if wanted is not None else fingerprint(attributes))

    def ids(self) -> Iterable[str]:
        """Every id that may be held (a removal is sent for those no longer wanted)."""
        return self.listed if self.listed is not None else self.entries


async def _holding(backend: AudienceBackend, audience_id: str, journal: Journal | None) -> _Held:
    """Read what the audience holds now: its listing where it has one (the journal adopts
    it), else the journal, once earlier runs' accepted writes are waited for."""
    if backend.capabilities.list_members:
        listed = {m.id: m.attributes async for m in backend.iter_members(audience_id)}
        if journal is not None:
            await journal.adopt(listed)
        return _Held(listed=listed)
    if journal is None:
        return _Held()  # nothing is known of it (migrate without a state store)
    entries = await journal.entries()
    await journal.settle_pending(backend, entries)
    return _Held(entries=entries)


def _fingerprints(members: Mapping[str, Member]) -> dict[str, str]:
    return {member_id: fingerprint(m.attributes) for member_id, m in members.items()}


def _guarded(
    state: StateStore | None, scope: str, audience_id: str
) -> contextlib.AbstractAsyncContextManager[Journal | None]:
    """The audience's lease and journal with a state store; nothing without one."""
    if state is None:
        return contextlib.nullcontext()
    return guarded(state, scope, audience_id)


async def _apply(
    backend: AudienceBackend,
    audience_id: str,
    ops: Iterable[Operation] | AsyncIterator[Operation],
    journal: Journal | None,
    on_progress: ProgressCallback | None,
    fingerprints: Mapping[str, str] | None = None,
) -> BulkResult:
    """``backend.apply`` of ``ops``, journalled when there is a journal (``fingerprints``: of
    the adds, where already computed)."""
    if journal is None:
        return await backend.apply(
            audience_id, ops, on_progress=on_progress, raise_on_failure=False
        )
    return await backend.apply(
        audience_id,
        journal.intents(aiterate(ops), fingerprints),
        on_progress=journal.progress(on_progress),
        raise_on_failure=False,
    )


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
    removed: int = 0
    target_size: int | None = None
    expected_size: int | None = None
    target_ids: str | None = None
    expected_ids: str | None = None
    elapsed: float = 0.0

    @property
    def verified(self) -> bool | None:
        """True when the target holds exactly the ids expected: the source's, less those that
        failed or were invalid (compared as a digest of the whole set, and by size where the
        provider reports one); None when there is nothing to compare with."""
        if self.target_ids is None and self.target_size is None:
            return None
        same_ids = self.target_ids is None or self.target_ids == self.expected_ids
        same_size = self.target_size is None or self.target_size == self.expected_size
        return same_ids and same_size

    @property
    def ok(self) -> bool:
        return not (self.failed or self.unknown or self.invalid) and self.verified is not False


def default_mapping(member: Member) -> Member:
    """The member as the source lists it. From Dexatel: id = the number (E.164), attributes =
    the contact fields that are set (first_name, last_name, custom1, custom2)."""
    return member


def _run_id(source_scope: str, source_audience: str, target_scope: str,
            target_audience: str) -> str:  # fmt: skip
    return f"migrate:{source_scope}:{source_audience}->{target_scope}:{target_audience}"


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
    """Make ``target_audience`` hold exactly the members of ``source_audience``.

    Both are given by id or by name. ``mapping`` turns each source member into a target member
    (one for one; the default keeps id and attributes). With ``create``, a missing target is
    created (with ``channel``, else the source audience's channel where it has one). Members
    the target holds that the source does not are removed. ``dry_run`` reads and checks
    everything, sends nothing, and reports what would be sent.

    With a ``state`` store the run holds the target's lease and journals every write; after a
    crash or a cancel, call again with ``resume=True``: the source is read again and compared,
    member by member, with what the target holds (its listing, or the journal), so what the
    earlier run confirmed is not sent again, and whatever changed at the source meanwhile is
    carried over. At the end the target's ids are compared with the source's
    (:attr:`MigrationReport.verified`).
    """
    source.capabilities.require(
        source.provider, "list_members", "a migration reads the source audience's members"
    )
    mapping = mapping or default_mapping
    start = monotonic()
    source_found, _ = await resolve_audience(source, source_audience)
    source_id = source_found.id
    if dry_run:
        return await _dry_run(source, source_id, source_audience, target, target_audience,
                              mapping, state)  # fmt: skip

    scope = await store_scope(state, target, None) if state is not None else ""
    run = run_id or _run_id(
        scope_of(source), source_audience, scope or scope_of(target), target_audience
    )
    saved = None
    if state is not None:
        legacy = None if run_id else _run_id(source.provider, source_audience, target.provider,
                                             target_audience)  # fmt: skip
        saved = await anyio.to_thread.run_sync(_checkpoint, state, run, legacy)
    if saved is not None and not resume:
        raise CheckpointError(
            f"run {run!r} was interrupted: pass resume=True to continue it, or clear its "
            "checkpoint (StateStore.clear_checkpoint) to start over",
            run=run,
            interrupted=True,
        )
    if saved is None and resume:
        raise CheckpointError(
            f"nothing to resume: no checkpoint for run {run!r}", run=run, interrupted=False
        )
    if saved is not None:
        target_id, created = str(saved["target"]), bool(saved.get("created"))
    else:
        if channel is None and source_found.channel is not Channel.UNKNOWN:
            channel = source_found.channel  # a new target takes the source's channel
        found, created = await resolve_audience(
            target, target_audience, create=create, channel=channel
        )
        target_id = found.id
        if state is not None:
            await anyio.to_thread.run_sync(
                state.save_checkpoint, run, {"target": target_id, "created": created}
            )

    async with _guarded(state, scope, target_id) as journal:
        diff = _Difference(target, await _holding(target, target_id, journal), mapping)
        # A poll timeout propagates: the journal holds the handles, resume=True waits for them.
        operations = diff.operations(source.iter_members(source_id))
        result = await _apply(target, target_id, operations, journal, on_progress)
        expected = diff.seen - set(result.failed)
        if journal is not None:
            await journal.flush()
        target_ids = await _held_ids(target, target_id, state, scope)
    target_size = (await target.get_audience(target_id)).size
    if state is not None:
        await anyio.to_thread.run_sync(state.clear_checkpoint, run)
    return MigrationReport(
        source_audience=source_audience,
        target_audience=target_id,
        dry_run=False,
        resumed_from=diff.unchanged if saved is not None else 0,
        read=diff.read,
        sent=result.operations,
        applied=result.applied,
        failed={k: str(v) for k, v in result.failed.items()},
        unknown={k: str(v) for k, v in result.unknown.items()},
        invalid=tuple(diff.problems),
        unchanged=diff.unchanged,
        removed=diff.removed,
        target_size=target_size,
        expected_size=len(expected),
        target_ids=None if target_ids is None else ids_digest(target_ids),
        expected_ids=ids_digest(expected),
        elapsed=monotonic() - start,
    )


async def _held_ids(
    target: AudienceBackend, target_id: str, state: StateStore | None, scope: str
) -> set[str] | None:
    """The ids the target holds: listed, or as the journal knows them (None without either)."""
    if target.capabilities.list_members:
        return {m.id async for m in target.iter_members(target_id)}
    if state is None:
        return None
    pushed = await anyio.to_thread.run_sync(state.pushed, scope, target_id)
    return set(pushed)


def _checkpoint(state: StateStore, run: str, legacy: str | None) -> dict[str, Any] | None:
    """The checkpoint of ``run``; one that audiencekit 0.1 saved under its own run id
    (``legacy``, which named no accounts) is moved to ``run`` first."""
    saved = state.checkpoint(run)
    if saved is None and legacy is not None:
        saved = state.checkpoint(legacy)
        if saved is not None:
            state.save_checkpoint(run, saved)
            state.clear_checkpoint(legacy)
    return saved


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of a set of ids (their order does not matter)."""
    digest = hashlib.blake2b(digest_size=16)
    for member_id in sorted(ids):
        digest.update(member_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


async def _dry_run(
    source: AudienceBackend,
    source_id: str,
    source_audience: str,
    target: AudienceBackend,
    target_audience: str,
    mapping: Mapper,
    state: StateStore | None,
) -> MigrationReport:
    """Read and check every member; compare with what the target holds, when that is known."""
    held = _Held(entries={})
    try:
        target_id = (await resolve_audience(target, target_audience))[0].id
    except NotFoundError:
        target_id = target_audience  # a run would create it (with create=True)
    else:
        if target.capabilities.list_members:
            held = _Held(listed={m.id: m.attributes async for m in target.iter_members(target_id)})
        elif state is not None:
            scope = await store_scope(state, target, None)
            entries = await anyio.to_thread.run_sync(state.entries, scope, target_id)
            held = _Held(entries=entries)
    diff = _Difference(target, held, mapping)
    sent = 0
    async for _ in diff.operations(source.iter_members(source_id)):
        sent += 1
    return MigrationReport(
        source_audience=source_audience,
        target_audience=target_id,
        dry_run=True,
        resumed_from=0,
        read=diff.read,
        sent=sent,
        applied=0,
        failed={},
        unknown={},
        invalid=tuple(diff.problems),
        unchanged=diff.unchanged,
        removed=diff.removed,
    )


class _Difference:
    """What a migration sends: each source member the target does not hold as it is (as the
    target's add), then a removal of each id the target may hold that the source did not list;
    counting as it goes."""

    def __init__(self, target: AudienceBackend, held: _Held, mapping: Mapper) -> None:
        self.target = target
        self.held = held
        self.mapping = mapping
        self.seen: set[str] = set()
        self.problems: list[Problem] = []
        self.read = self.unchanged = self.removed = 0

    async def operations(self, source: AsyncIterator[Member]) -> AsyncIterator[Operation]:
        held = self.held
        async for member in source:
            self.read += 1
            try:
                op = self.target.prepare(Add(self.mapping(member)))
            except ValidationError as exc:
                self.problems.extend(exc.problems)
                continue
            assert isinstance(op, Add)
            self.seen.add(op.id)
            if held.holds(op.id, op.member.attributes):
                self.unchanged += 1
                continue
            yield op
        for member_id in list(held.ids()):
            if member_id not in self.seen:
                self.removed += 1
                yield Remove(member_id)
