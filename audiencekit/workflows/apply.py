"""The one journalled apply of every workflow: a bulk call whose writes the journal records.

With a journal each block of operations is marked intended before any of it can be sent, and
the call's progress events tell the journal what was accepted and what settled; without one it
is the backend's ``apply``. ``sync``, ``migrate`` and the ``AudienceWriter`` all send this way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, Iterable

from ..backend import AudienceBackend
from ..core.base import aiterate
from ..models import BulkResult, Operation
from ..progress import ProgressCallback
from ..state.base import StateStore
from .journal import Journal, guarded

__all__ = ["apply", "journal_of"]


def journal_of(
    state: StateStore | None, scope: str, audience_id: str
) -> contextlib.AbstractAsyncContextManager[Journal | None]:
    """The audience's lease and journal with a state store; nothing without one."""
    if state is None:
        return contextlib.nullcontext()
    return guarded(state, scope, audience_id)


async def apply(
    backend: AudienceBackend,
    audience_id: str,
    operations: Iterable[Operation] | AsyncIterable[Operation],
    journal: Journal | None,
    *,
    on_progress: ProgressCallback | None = None,
    fingerprints: dict[str, str] | None = None,
) -> BulkResult:
    """``backend.apply`` of ``operations`` (never raising for failed ids), journalled when
    there is a journal; ``fingerprints`` are those of the adds already computed, by id (the
    journal takes each out as it uses it)."""
    if journal is None:
        return await backend.apply(
            audience_id, operations, on_progress=on_progress, raise_on_failure=False
        )
    return await backend.apply(
        audience_id,
        journal.intents(aiterate(operations), fingerprints),
        on_progress=journal.progress(on_progress),
        raise_on_failure=False,
    )
