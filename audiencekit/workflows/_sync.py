"""``sync``: make an audience hold exactly a desired set of members, sending only the difference.

The difference is the one diff of the workflows (:mod:`~audiencekit.workflows.diff`): what is
wanted against what the audience holds (its own listing where it has one, the state store's
journal where it has none). With a state store the run holds the audience's lease and journals
every write (:mod:`~audiencekit.workflows.apply`), so that a crash, a cancel or an unknown
outcome leaves a store from which the next run converges to the exact wanted state.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .. import telemetry
from ..backend import AudienceBackend, Members
from ..core.resolve import resolve_audience
from ..errors import ConfigurationError
from ..models import BulkResult, Channel
from ..progress import ProgressCallback
from ..state.base import StateStore
from .apply import apply, journal_of
from .diff import SortedSpill, compared, dry_diff, spill_wanted
from .history import ops_from_spill, recording
from .journal import store_scope

__all__ = ["SyncReport", "sync"]


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
    #: Whether this was a dry run (nothing was sent).
    dry_run: bool = False
    #: The first ids of each kind (``"added"``, ``"changed"``, ``"removed"``), in id order.
    examples: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    #: The id of the run in the state store's history (None without a store, or dry).
    history_id: str | None = None

    @property
    def sent(self) -> int:
        return self.added + self.changed + self.removed


@telemetry.traced("audiencekit.sync", provider="backend", counts_ids=False)
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
    dry_run: bool = False,
) -> SyncReport:
    """Make the audience hold exactly ``desired``, sending only the difference.

    The audience is given by id or by name; with ``create`` a missing one is created
    (``channel`` for Dexatel). A backend that can list its members is compared with its own
    listing; one that cannot (Batch) needs ``state``, whose journal says what earlier runs
    wrote (under ``scope``: by default the provider and the backend's account, so that two
    accounts sharing one store never mix). With a state store the run holds the
    audience's lease (a concurrent run raises :class:`~audiencekit.AudienceBusyError`) and
    journals every write as it goes: after a crash, a cancel or an unknown outcome the next
    sync writes again whatever is not confirmed. A second identical sync sends nothing.

    Memory does not grow with the audience: ``desired`` is read once and sorted through
    temporary files, then compared in id order with the journal's entries (or the listing,
    spilled the same way); only the ids changed or removed are kept, for the report.

    ``dry_run`` reads and compares the same way and reports what would be sent, with the
    first ids of each kind (:attr:`SyncReport.examples`); it sends nothing, journals nothing,
    takes no lease and creates no audience.

    With a state store a run (not a dry run) is recorded in its history (see
    :mod:`~audiencekit.workflows.history`), however it ends: its counts, its outcome, and the
    ids that failed or are unknown, for :func:`~audiencekit.workflows.retry`.
    """
    if not backend.capabilities.list_members and state is None:
        raise ConfigurationError(
            f"{backend.provider} cannot list the members of an audience: pass a StateStore "
            "so that sync knows what it pushed before"
        )
    async with recording(None if dry_run else state, backend, audience_id, "sync", scope=scope,
                         journalled=True) as run:  # fmt: skip
        wanted, _ = await spill_wanted(backend, desired)  # every bad member raises, nothing sent
        if dry_run:
            try:
                return await _dry_run(backend, audience_id, wanted, create, state, scope)
            finally:
                wanted.close()
        try:
            found, _ = await resolve_audience(backend, audience_id, create=create, channel=channel)
            audience_id = run.audience = found.id
            scope = await store_scope(state, backend, scope) if state is not None else ""
            async with (
                journal_of(state, scope, audience_id) as journal,
                compared(backend, audience_id, wanted, journal) as diff,
            ):
                operations = diff.operations()
                result = await apply(
                    backend,
                    audience_id,
                    operations,
                    journal,
                    on_progress=on_progress,
                    fingerprints=diff.fingerprints,
                )
            await run.note(result, ops_from_spill(wanted, diff.removed_ids))
        finally:
            wanted.close()
        missed = _not_applied(result)
        missed_changes = len(diff.changed_ids & missed)
        missed_removals = len(diff.removed_ids & missed)
        report = SyncReport(
            added=diff.added,
            changed=diff.changed,
            removed=diff.removed,
            unchanged=diff.unchanged,
            result=result,
            applied={
                "added": diff.added - (len(missed) - missed_changes - missed_removals),
                "changed": diff.changed - missed_changes,
                "removed": diff.removed - missed_removals,
            },
            examples=diff.examples(),
            history_id=run.id if run.recorded else None,
        )
        run.counts.update(added=diff.added, changed=diff.changed, removed=diff.removed,
                          unchanged=diff.unchanged)  # fmt: skip
        if raise_on_failure:
            result.raise_for_failures()
    return report


async def _dry_run(
    backend: AudienceBackend,
    audience: str,
    wanted: SortedSpill,
    create: bool,
    state: StateStore | None,
    scope: str | None,
) -> SyncReport:
    _, diff = await dry_diff(backend, audience, wanted, state=state, scope=scope,
                             missing_ok=create)  # fmt: skip
    return SyncReport(
        added=diff.added,
        changed=diff.changed,
        removed=diff.removed,
        unchanged=diff.unchanged,
        result=BulkResult(),
        applied={"added": 0, "changed": 0, "removed": 0},
        dry_run=True,
        examples=diff.examples(),
    )


def _not_applied(result: BulkResult) -> set[str]:
    """The ids of ``result`` that were not applied: failed, unknown, or still pending."""
    return {*result.failed, *result.unknown, *(k for chunk in result.pending for k in chunk.ids)}
