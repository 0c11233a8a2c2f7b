"""``migrate``: make one audience hold exactly the members of another, on any two backends.

The source is read once (mapped, checked, sorted through temporary files) and compared in id
order with what the target holds, by the one diff of the workflows; what differs is sent by the
one journalled apply. A resumed run is the same comparison: what the earlier run confirmed is
not sent again, and what changed at the source meanwhile is carried over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import anyio
import anyio.to_thread
import attrs

from .. import telemetry
from ..backend import AudienceBackend
from ..core.clock import monotonic
from ..core.resolve import resolve_audience
from ..errors import CheckpointError, Problem
from ..models import Channel, Member
from ..progress import ProgressCallback
from ..state.base import StateStore, scope_of
from .apply import apply, journal_of
from .diff import compared, digest_sorted, dry_diff, ids_digest, spill_listing, spill_wanted
from .history import ops_from_spill, recording
from .journal import store_scope

__all__ = ["MigrationReport", "default_mapping", "ids_digest", "migrate"]

Mapper = Callable[[Member], Member]


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
    #: Of the members sent (or, in a dry run, to send): those the target did not hold, and
    #: those it held with other attributes.
    added: int = 0
    changed: int = 0
    removed: int = 0
    #: The first ids of each kind (``"added"``, ``"changed"``, ``"removed"``), in id order.
    examples: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: The id of the run in the state store's history (None without a store, or dry).
    history_id: str | None = None
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


@telemetry.traced("audiencekit.migrate", provider="target", source="source", counts_ids=False)
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
    (:attr:`MigrationReport.verified`). With a state store the run (not a dry run) is recorded
    in its history (see :mod:`~audiencekit.workflows.history`), however it ends.
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

    async with recording(state, target, target_audience, "migrate", journalled=True) as log:
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
        log.audience = target_id

        problems: list[Problem] = []
        wanted, read = await spill_wanted(target, source.iter_members(source_id), mapping=mapping,
                                          problems=problems)  # fmt: skip
        try:
            async with journal_of(state, scope, target_id) as journal:
                # A poll timeout propagates: the journal holds the handles, resume=True waits.
                async with compared(target, target_id, wanted, journal) as diff:
                    operations = diff.operations()
                    result = await apply(
                        target,
                        target_id,
                        operations,
                        journal,
                        on_progress=on_progress,
                        fingerprints=diff.fingerprints,
                    )
                await log.note(result, ops_from_spill(wanted, diff.removed_ids))
                failed = result.failed
                expected_size, expected_ids = await anyio.to_thread.run_sync(
                    _digest_of, (k for k, _ in wanted if k not in failed)
                )
                if journal is not None:
                    await journal.flush()
                target_ids = await _held_digest(target, target_id, state, scope)
        finally:
            wanted.close()
        target_size = (await target.get_audience(target_id)).size
        if state is not None:
            await anyio.to_thread.run_sync(state.clear_checkpoint, run)
        report = MigrationReport(
            source_audience=source_audience,
            target_audience=target_id,
            dry_run=False,
            resumed_from=diff.unchanged if saved is not None else 0,
            read=read,
            sent=result.operations,
            applied=result.applied,
            failed={k: str(v) for k, v in result.failed.items()},
            unknown={k: str(v) for k, v in result.unknown.items()},
            invalid=tuple(problems),
            unchanged=diff.unchanged,
            added=diff.added,
            changed=diff.changed,
            removed=diff.removed,
            examples=diff.examples(),
            target_size=target_size,
            expected_size=expected_size,
            target_ids=target_ids,
            expected_ids=expected_ids,
            elapsed=monotonic() - start,
            history_id=log.id if log.recorded else None,
        )
        log.counts.update(read=read, sent=result.operations, unchanged=diff.unchanged,
                          removed=diff.removed, invalid=len(problems))  # fmt: skip
        if log.outcome == "ok" and not report.ok:  # invalid members, or the ids differ
            log.outcome = "partial"
    return report


async def _held_digest(
    target: AudienceBackend, target_id: str, state: StateStore | None, scope: str
) -> str | None:
    """The digest of the ids the target holds: listed, or as the journal knows them (None
    without either); read in id order, never held as a set."""
    if target.capabilities.list_members:
        listing = await spill_listing(target, target_id)
        try:
            return await anyio.to_thread.run_sync(digest_sorted, (k for k, _ in listing))
        finally:
            listing.close()
    if state is None:
        return None

    def pushed() -> str:
        return digest_sorted(
            k for k, e in state.iter_entries(scope, target_id) if e.settled and e.fingerprint
        )

    return await anyio.to_thread.run_sync(pushed)


def _digest_of(ids: Iterable[str]) -> tuple[int, str]:
    """How many ids, and their digest (given in id order)."""
    count = 0

    def counted() -> Iterator[str]:
        nonlocal count
        for member_id in ids:
            count += 1
            yield member_id

    digest = digest_sorted(counted())
    return count, digest


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
    problems: list[Problem] = []
    wanted, read = await spill_wanted(target, source.iter_members(source_id), mapping=mapping,
                                      problems=problems)  # fmt: skip
    try:  # a missing target: a run would create it (with create=True)
        target_id, d = await dry_diff(target, target_audience, wanted, state=state,
                                      missing_ok=True)  # fmt: skip
    finally:
        wanted.close()
    return MigrationReport(
        source_audience=source_audience,
        target_audience=target_id,
        dry_run=True,
        resumed_from=0,
        read=read,
        sent=d.added + d.changed + d.removed,
        applied=0,
        failed={},
        unknown={},
        invalid=tuple(problems),
        unchanged=d.unchanged,
        added=d.added,
        changed=d.changed,
        removed=d.removed,
        examples=d.examples(),
    )
