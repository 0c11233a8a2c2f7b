"""The workflows over any backend: ``sync``, ``migrate``, ``Mirror`` and ``AudienceWriter``;
and the run history's ``recording`` and ``retry`` (:mod:`~audiencekit.workflows.history`).

They share one diff (:mod:`~audiencekit.workflows.diff`) and one journalled apply
(:mod:`~audiencekit.workflows.apply`, over the journal of :mod:`~audiencekit.workflows.journal`);
each is importable from the top level too. ``sync`` and ``migrate`` live in private modules, so
that ``audiencekit.workflows.sync`` is the function, never a module of the same name.
"""

from ._migrate import MigrationReport, migrate
from ._sync import SyncReport, sync
from .history import RetryReport, RunLog, ops_from_members, recording, retry
from .mirror import Mirror, MirrorError
from .writer import AudienceWriter

__all__ = [
    "AudienceWriter",
    "MigrationReport",
    "Mirror",
    "MirrorError",
    "RetryReport",
    "RunLog",
    "SyncReport",
    "migrate",
    "ops_from_members",
    "recording",
    "retry",
    "sync",
]
