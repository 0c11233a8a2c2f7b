"""Batch's Audience API 2.x: the typed client and the backend."""

from .backend import BatchBackend
from .client import BatchClient
from .wire import BatchAudience, IndexingState

__all__ = ["BatchAudience", "BatchBackend", "BatchClient", "IndexingState"]
