"""The workflows over any backend: ``sync``, ``migrate``, ``Mirror`` and ``AudienceWriter``.

They share one diff (:mod:`~audiencekit.workflows.diff`) and one journalled apply
(:mod:`~audiencekit.workflows.journal`); each is importable from the top level too.
"""

from .mirror import Mirror, MirrorError
from .sync import MigrationReport, SyncReport, migrate, sync
from .writer import AudienceWriter

__all__ = [
    "AudienceWriter",
    "MigrationReport",
    "Mirror",
    "MirrorError",
    "SyncReport",
    "migrate",
    "sync",
]
