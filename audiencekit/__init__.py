"""audiencekit: one typed, async API for the audience endpoints of Dexatel and Batch."""

from typing import TYPE_CHECKING

from .backend import AudienceBackend, Capabilities
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AudienceBusyError,
    AudienceKitError,
    AuthenticationError,
    BadRequestError,
    CheckpointError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PaginationError,
    PartialFailureError,
    PermissionDeniedError,
    PollTimeoutError,
    Problem,
    RateLimitError,
    UnexpectedResponseError,
    UnsupportedFeatureError,
    ValidationError,
    WriteReplacedError,
    WriterStoppedError,
)

if TYPE_CHECKING:
    from .core.poll import PollPolicy
    from .core.transport import RetryPolicy
    from .pages import AsyncPager, Page
    from .progress import ChunkAccepted, ChunkDone, ChunkSent, ProgressCallback, ProgressEvent
    from .providers.batch import BatchBackend, BatchClient
    from .providers.dexatel import DexatelBackend, DexatelClient
    from .state import SqliteStateStore, StateStore
    from .workflows.mirror import Mirror, MirrorError
    from .workflows.writer import AudienceWriter

from .models import (
    Add,
    AttributeValue,
    Audience,
    BulkResult,
    Channel,
    Member,
    Operation,
    PendingChunk,
    Remove,
    Url,
)
from .providers import open_backend

__version__ = "0.1.0"

# The engine, the transport (httpx) and the provider modules load on first use, keeping
# ``import audiencekit`` light: the vocabulary, the errors and the registry are all it loads.
_LAZY = {
    "ChunkAccepted": "audiencekit.progress",
    "ChunkDone": "audiencekit.progress",
    "ChunkSent": "audiencekit.progress",
    "ProgressCallback": "audiencekit.progress",
    "ProgressEvent": "audiencekit.progress",
    "RetryPolicy": "audiencekit.core.transport",
    "AsyncPager": "audiencekit.pages",
    "Page": "audiencekit.pages",
    "PollPolicy": "audiencekit.core.poll",
    "BatchBackend": "audiencekit.providers.batch",
    "BatchClient": "audiencekit.providers.batch",
    "DexatelBackend": "audiencekit.providers.dexatel",
    "DexatelClient": "audiencekit.providers.dexatel",
    "AudienceWriter": "audiencekit.workflows.writer",
    "Mirror": "audiencekit.workflows.mirror",
    "MirrorError": "audiencekit.workflows.mirror",
    "StateStore": "audiencekit.state",
    "SqliteStateStore": "audiencekit.state",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'audiencekit' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "Add",
    "AsyncPager",
    "AttributeValue",
    "Audience",
    "AudienceBackend",
    "AudienceBusyError",
    "AudienceKitError",
    "AudienceWriter",
    "AuthenticationError",
    "BadRequestError",
    "BatchBackend",
    "BatchClient",
    "BulkResult",
    "Capabilities",
    "Channel",
    "CheckpointError",
    "ChunkAccepted",
    "ChunkDone",
    "ChunkSent",
    "ConfigurationError",
    "ConflictError",
    "DexatelBackend",
    "DexatelClient",
    "InternalServerError",
    "Member",
    "Mirror",
    "MirrorError",
    "NotFoundError",
    "Operation",
    "Page",
    "PaginationError",
    "PartialFailureError",
    "PendingChunk",
    "PermissionDeniedError",
    "PollPolicy",
    "PollTimeoutError",
    "UnexpectedResponseError",
    "Problem",
    "ProgressCallback",
    "ProgressEvent",
    "RateLimitError",
    "Remove",
    "RetryPolicy",
    "SqliteStateStore",
    "StateStore",
    "UnsupportedFeatureError",
    "Url",
    "ValidationError",
    "WriteReplacedError",
    "WriterStoppedError",
    "__version__",
    "open_backend",
]
