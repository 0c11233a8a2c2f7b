"""audiencekit: one typed, async API for the audience endpoints of Dexatel and Batch."""

from typing import TYPE_CHECKING

from .backend import AudienceBackend
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AudienceBusyError,
    AudienceKitError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PartialFailureError,
    PollTimeoutError,
    RateLimitError,
    StateStoreError,
    ValidationError,
)

if TYPE_CHECKING:
    from .providers.batch import BatchBackend
    from .providers.dexatel import DexatelBackend
    from .state import StateStore
    from .workflows import MigrationReport, SyncReport, migrate, sync
    from .workflows.mirror import Mirror
    from .workflows.writer import AudienceWriter

from .models import Add, Audience, BulkResult, Channel, Member, Operation, PendingChunk, Remove
from .providers import open_backend

__version__ = "0.1.0"

# The engine, the transport (httpx) and the provider modules load on first use, keeping
# ``import audiencekit`` light: the vocabulary, the errors and the registry are all it loads.
_LAZY = {
    "BatchBackend": "audiencekit.providers.batch",
    "DexatelBackend": "audiencekit.providers.dexatel",
    "AudienceWriter": "audiencekit.workflows.writer",
    "Mirror": "audiencekit.workflows.mirror",
    "MigrationReport": "audiencekit.workflows",
    "SyncReport": "audiencekit.workflows",
    "migrate": "audiencekit.workflows",
    "sync": "audiencekit.workflows",
    "StateStore": "audiencekit.state",
}

# The top level keeps what a user types in the first hour; the rest lives in the public
# module named here (and only there), which the AttributeError of a top-level lookup names.
_MOVED = {
    **dict.fromkeys(
        (
            "BadRequestError",
            "CheckpointError",
            "ConflictError",
            "InternalServerError",
            "PaginationError",
            "PermissionDeniedError",
            "Problem",
            "UnexpectedResponseError",
            "UnsupportedFeatureError",
            "WriteReplacedError",
            "WriterStoppedError",
        ),
        "audiencekit.errors",
    ),
    "Capabilities": "audiencekit.backend",
    "AttributeValue": "audiencekit.models",
    "Url": "audiencekit.models",
    **dict.fromkeys(
        ("ChunkAccepted", "ChunkDone", "ChunkSent", "ProgressCallback", "ProgressEvent"),
        "audiencekit.progress",
    ),
    "AsyncPager": "audiencekit.pages",
    "Page": "audiencekit.pages",
    "DexatelClient": "audiencekit.providers.dexatel",
    "BatchClient": "audiencekit.providers.batch",
    "SqliteStateStore": "audiencekit.state",
    "MirrorError": "audiencekit.workflows",
    "PollPolicy": "audiencekit.options",
    "RetryPolicy": "audiencekit.options",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        home = _MOVED.get(name)
        if home is not None:
            raise AttributeError(
                f"module 'audiencekit' has no attribute {name!r}: it lives in {home} "
                f"(from {home} import {name})"
            )
        raise AttributeError(f"module 'audiencekit' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Add",
    "Audience",
    "AudienceBackend",
    "AudienceBusyError",
    "AudienceKitError",
    "AudienceWriter",
    "AuthenticationError",
    "BatchBackend",
    "BulkResult",
    "Channel",
    "ConfigurationError",
    "DexatelBackend",
    "Member",
    "MigrationReport",
    "Mirror",
    "NotFoundError",
    "Operation",
    "PartialFailureError",
    "PendingChunk",
    "PollTimeoutError",
    "RateLimitError",
    "Remove",
    "StateStore",
    "StateStoreError",
    "SyncReport",
    "ValidationError",
    "__version__",
    "migrate",
    "open_backend",
    "sync",
]
