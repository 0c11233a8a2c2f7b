"""``Mirror``: one :class:`~audiencekit.AudienceBackend` that writes to several at once.

For dual running during a migration: every write goes to every backend, concurrently, and each
backend's outcome is reported. One backend failing loses nothing on the others: they finish,
and the failure is raised afterwards with every backend's result.

Audiences are addressed by *name* (the ids differ: a Dexatel UUID, a Batch name); the mirror
finds each backend's id for a name once and remembers it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence

import anyio
import attrs

from ..backend import AudienceBackend, Capabilities, Members, Operations
from ..core.account import account_fingerprint
from ..core.base import BaseBackend, aiterate
from ..core.resolve import resolve_audience
from ..errors import (
    AudienceKitError,
    PollTimeoutError,
    Problem,
    UnsupportedFeatureError,
    ValidationError,
)
from ..models import Audience, BulkResult, Channel, Member, Operation, PendingChunk
from ..pages import AsyncPager
from ..progress import ProgressCallback

__all__ = ["Mirror", "MirrorError"]


class MirrorError(AudienceKitError):
    """At least one backend of a :class:`Mirror` failed; ``results`` has each backend's outcome
    (a :class:`BulkResult`, or the exception it raised)."""

    def __init__(self, results: Mapping[str, BulkResult | BaseException]) -> None:
        self.results = dict(results)
        failed = [name for name, r in self.results.items() if isinstance(r, BaseException)]
        super().__init__("mirror: " + ", ".join(f"{n} failed ({self.results[n]})" for n in failed))


def _merge(parts: Mapping[str, BulkResult]) -> BulkResult:
    """One result for all: an id not applied by every backend is failed (or unknown)."""
    failed: dict[str, AudienceKitError] = {}
    unknown: dict[str, AudienceKitError] = {}
    for result in parts.values():
        failed.update(result.failed)
    for result in parts.values():
        unknown.update((k, v) for k, v in result.unknown.items() if k not in failed)
    return BulkResult(
        applied=min((r.applied for r in parts.values()), default=0),
        failed=failed,
        unknown=unknown,
        operations=max((r.operations for r in parts.values()), default=0),
        handles=tuple(h for r in parts.values() for h in r.handles),
        chunks=sum(r.chunks for r in parts.values()),
        retries=sum(r.retries for r in parts.values()),
        polls=sum(r.polls for r in parts.values()),
        elapsed=max((r.elapsed for r in parts.values()), default=0.0),
        parts=parts,
    )


class Mirror(BaseBackend):
    """Writes every change to each of ``backends`` (name → backend); reads from the first.

    ``buffer`` is how many operations may wait for the slowest backend before the stream is
    held back (memory stays bounded whatever the input).
    """

    provider = "mirror"

    def __init__(self, backends: Mapping[str, AudienceBackend], *, buffer: int = 10_000) -> None:
        if not backends:
            raise ValueError("a mirror needs at least one backend")
        self.backends = dict(backends)
        self.buffer = buffer
        self._ids: dict[tuple[str, str], str] = {}
        flags = [b.capabilities for b in self.backends.values()]
        self.capabilities = Capabilities(
            list_members=flags[0].list_members,
            rename=all(c.rename for c in flags),
            replace=all(c.replace for c in flags),
            campaigns=False,
            deferred_writes=False,
            max_batch=min(c.max_batch for c in flags),
            max_attributes=min(
                (c.max_attributes for c in flags if c.max_attributes is not None), default=None
            ),
        )

    def __repr__(self) -> str:
        return f"<Mirror {', '.join(self.backends)}>"

    @property
    def account(self) -> str:
        """The fingerprint of the accounts the mirror writes to, together."""
        return account_fingerprint("\n".join(f"{n}={b.provider}/{b.account}"
                                              for n, b in self.backends.items()))  # fmt: skip

    @property
    def primary(self) -> AudienceBackend:
        return next(iter(self.backends.values()))

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()

    # -- ids ------------------------------------------------------------------------------------

    async def _id(self, name: str, backend_name: str) -> str:
        key = (name, backend_name)
        if key not in self._ids:
            found, _ = await resolve_audience(self.backends[backend_name], name)
            self._ids[key] = found.id
        return self._ids[key]

    def _audience(self, name: str, found: Audience) -> Audience:
        ids = {b: i for (n, b), i in self._ids.items() if n == name}
        return attrs.evolve(found, id=name, provider=self.provider, extra={"ids": ids})

    async def _each(self, call: str, name: str, *args: object) -> dict[str, object]:
        """Call ``call(backend_id, *args)`` on every backend at once; raise MirrorError after
        all finished if any failed."""
        results: dict[str, object] = {}

        async def one(backend_name: str) -> None:
            try:
                backend_id = await self._id(name, backend_name)
                method = getattr(self.backends[backend_name], call)
                results[backend_name] = await method(backend_id, *args)
            except Exception as exc:  # reported with the others' results, once all are done
                results[backend_name] = exc

        async with anyio.create_task_group() as tg:
            for backend_name in self.backends:
                tg.start_soon(one, backend_name)
        if any(isinstance(r, BaseException) for r in results.values()):
            raise MirrorError(
                {k: v for k, v in results.items() if isinstance(v, (BulkResult, BaseException))}
            )
        return results

    # -- audiences --------------------------------------------------------------------------

    async def create_audience(
        self, name: str, *, channel: Channel | str | None = None, exist_ok: bool = False
    ) -> Audience:
        """Create the audience on every backend (each under ``name``; with ``exist_ok``, one
        that exists already is used)."""
        made: dict[str, Audience] = {}
        errors: dict[str, BulkResult | BaseException] = {}
        for backend_name, backend in self.backends.items():
            try:
                made[backend_name] = await backend.create_audience(
                    name, channel=channel, exist_ok=exist_ok
                )
            except AudienceKitError as exc:
                errors[backend_name] = exc
            else:
                self._ids[(name, backend_name)] = made[backend_name].id
        if errors:
            raise MirrorError(errors)
        return self._audience(name, next(iter(made.values())))

    async def get_audience(self, audience_id: str) -> Audience:
        first = next(iter(self.backends))
        found = await self.primary.get_audience(await self._id(audience_id, first))
        return self._audience(audience_id, found)

    def list_audiences(self) -> AsyncPager[Audience]:
        """The first backend's audiences, each under its name (the id a mirror knows it by)."""
        return self.primary.list_audiences().map(lambda found: self._audience(found.name, found))

    async def rename_audience(self, audience_id: str, name: str) -> Audience:
        self.capabilities.require(self.provider, "rename")
        await self._each("rename_audience", audience_id, name)
        for backend_name in self.backends:
            self._ids[(name, backend_name)] = self._ids.pop((audience_id, backend_name))
        return await self.get_audience(name)

    async def delete_audience(self, audience_id: str) -> None:
        await self._each("delete_audience", audience_id)
        for backend_name in self.backends:
            self._ids.pop((audience_id, backend_name), None)

    def iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        self.capabilities.require(self.provider, "list_members", "the first backend cannot list")
        return self._iter_members(audience_id)

    async def _iter_members(self, audience_id: str) -> AsyncIterator[Member]:
        first = next(iter(self.backends))
        backend_id = await self._id(audience_id, first)
        async for member in self.primary.iter_members(backend_id):
            yield member

    def prepare(self, operation: Operation) -> Operation:
        """Check the operation against every backend (it is sent to each as given)."""
        for backend in self.backends.values():
            backend.prepare(operation)
        return operation

    async def replace_members(
        self, audience_id: str, members: Members, *, wait: bool = True
    ) -> BulkResult:
        self.capabilities.require(self.provider, "replace")
        collected = [m async for m in aiterate(members)]
        results = await self._each("replace_members", audience_id, collected)
        return _merge({k: v for k, v in results.items() if isinstance(v, BulkResult)})

    async def wait(
        self,
        pending: Sequence[PendingChunk] | BulkResult | PollTimeoutError,
        *,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        raise UnsupportedFeatureError(self.provider, "wait", "a mirror always waits")

    # -- bulk ---------------------------------------------------------------------------------

    async def apply(
        self,
        audience_id: str,
        operations: Operations,
        *,
        wait: bool = True,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> BulkResult:
        """Apply the operations on every backend at once; the result's ``parts`` holds each
        backend's own. A backend that raises does not stop the others: :class:`MirrorError`
        comes once all are done. ``on_progress`` hears the first backend's progress."""
        if not wait:
            raise UnsupportedFeatureError(self.provider, "wait=False", "a mirror always waits")
        if isinstance(operations, Collection):
            problems: list[Problem] = []
            for op in operations:  # a sized input is checked whole before anything is sent
                try:
                    self.prepare(op)
                except ValidationError as exc:
                    problems.extend(exc.problems)
            if problems:
                raise ValidationError(problems)
        results: dict[str, BulkResult | BaseException] = {}
        streams = {
            name: anyio.create_memory_object_stream[Operation](self.buffer)
            for name in self.backends
        }

        async def consume(name: str) -> None:
            receive = streams[name][1]
            backend = self.backends[name]
            progress = on_progress if name == next(iter(self.backends)) else None
            try:
                async with receive:
                    backend_id = await self._id(audience_id, name)
                    results[name] = await backend.apply(
                        backend_id, receive, on_progress=progress, raise_on_failure=False
                    )
            except Exception as exc:  # any failure of one backend is reported, the others go on
                results[name] = exc

        stopped: list[Exception] = []

        async def produce() -> None:
            senders = {name: pair[0] for name, pair in streams.items()}
            try:
                async for op in aiterate(operations):
                    for name, send in list(senders.items()):
                        try:
                            await send.send(op)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            del senders[name]  # that backend stopped: the others go on
            except Exception as exc:  # the caller's iterator failed: raised once all stopped
                stopped.append(exc)
            finally:
                for send in senders.values():
                    await send.aclose()

        async with anyio.create_task_group() as tg:
            for name in self.backends:
                tg.start_soon(consume, name)
            await produce()
        if stopped:
            raise stopped[0]
        if any(isinstance(r, BaseException) for r in results.values()):
            raise MirrorError(results)
        merged = _merge({k: v for k, v in results.items() if isinstance(v, BulkResult)})
        if raise_on_failure:
            merged.raise_for_failures()
        return merged
