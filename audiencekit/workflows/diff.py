"""The one diff of every workflow: what is wanted against what the audience may hold, in id order.

Both sides are streams sorted by id, in code-point order as the state store reads its entries.
The wanted members are read once, checked and handed to a :class:`SortedSpill` (in memory up to
a run, then sorted runs on anonymous temporary files, merged as they are read back); the held
side is the state store's journal (read by keyset pages) or the provider's own listing (spilled
the same way). One pass over both yields what to send, so memory holds a run of each side, not
the sets. The passes run in worker threads, a step at a time, so that the event loop stays free.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import pickle
import tempfile
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from typing import IO, Any

import anyio
import anyio.to_thread

from ..backend import AudienceBackend
from ..core.base import aiterate
from ..core.resolve import resolve_audience
from ..errors import NotFoundError, Problem, ValidationError
from ..models import Add, Member, Operation, Remove
from ..state.base import Entry, StateStore, fingerprint
from .journal import Journal, store_scope

__all__ = [
    "Diff",
    "SortedSpill",
    "compared",
    "digest_sorted",
    "dry_diff",
    "ids_digest",
    "spill_listing",
    "spill_wanted",
    "steps",
]

#: Values held in memory before a run is sorted and written to a temporary file.
RUN_SIZE = 50_000
#: Records per pickle frame of a run's file (what reading a run holds at once).
FRAME = 1_000
#: Items one worker-thread step moves.
STEP = 2_000
#: Ids of each kind a diff keeps as examples (the first ones, in id order).
EXAMPLES = 10

Record = tuple[Any, ...]


class SortedSpill:
    """Values by id, put in any order and read back in id order, the last value of an id winning.

    ``encode(id, value)`` turns a value into the record kept (it runs in a worker thread, a run
    at a time); ``to_file(record)``, when given, is what of it a run written to a file keeps.
    At most ``run_size`` values are held while putting; reading holds a frame of each run. It
    can be read any number of times, one reading at a time, until :meth:`close`.
    """

    def __init__(
        self,
        encode: Callable[[str, Any], Record],
        *,
        run_size: int | None = None,
        to_file: Callable[[Record], Record] | None = None,
    ) -> None:
        self._encode = encode
        self._to_file = to_file
        self._run_size = run_size or RUN_SIZE
        self._run: dict[str, Any] = {}
        self._files: list[IO[bytes]] = []
        self._last: list[tuple[str, Record]] = []
        self._done = False

    def put(self, key: str, value: Any) -> bool:
        """Keep ``value`` for ``key`` (a later one for the same key replaces it); True when the
        run is full and :meth:`spill` is due (no await per value on the hot path)."""
        run = self._run
        run.pop(key, None)
        run[key] = value
        return len(run) >= self._run_size

    async def spill(self) -> None:
        """Sort the run held, and write it to a temporary file (in a worker thread)."""
        run, self._run = self._run, {}
        if run:
            self._files.append(await anyio.to_thread.run_sync(self._write, run))

    async def seal(self) -> None:
        """Every value is in: sort the last run (in a worker thread)."""
        run, self._run = self._run, {}
        self._last = await anyio.to_thread.run_sync(self._sorted, run)
        self._done = True

    def _sorted(self, run: dict[str, Any]) -> list[tuple[str, Record]]:
        encode = self._encode
        return [(key, encode(key, run[key])) for key in sorted(run)]

    def _write(self, run: dict[str, Any]) -> IO[bytes]:
        records = self._sorted(run)
        if self._to_file is not None:
            plain = self._to_file
            records = [(key, plain(record)) for key, record in records]
        # Unlinked at once: gone with the process, however it ends. Closed by close().
        file = tempfile.TemporaryFile(prefix="audiencekit-")  # noqa: SIM115
        for start in range(0, len(records), FRAME):
            pickle.dump(records[start : start + FRAME], file, pickle.HIGHEST_PROTOCOL)
        file.flush()
        return file

    def __iter__(self) -> Iterator[tuple[str, Record]]:
        """``(id, record)`` in id order (blocking: read it in a worker thread)."""
        if not self._done:
            raise RuntimeError("seal() the spill before reading it")
        if not self._files:
            yield from self._last
            return
        runs = [_read(file) for file in self._files] + [iter(self._last)]
        tagged = [((key, index, record) for key, record in run) for index, run in enumerate(runs)]
        previous: tuple[str, Record] | None = None
        for key, _, record in heapq.merge(*tagged):  # (id, run) pairs are unique: never ties
            if previous is not None and previous[0] != key:
                yield previous
            previous = (key, record)
        if previous is not None:
            yield previous

    def close(self) -> None:
        for file in self._files:
            file.close()
        self._files, self._last, self._run = [], [], {}


def _read(file: IO[bytes]) -> Iterator[tuple[str, Record]]:
    file.seek(0)
    while True:
        try:
            frame = pickle.load(file)
        except EOFError:
            return
        yield from frame


def _wanted_record(_key: str, member: Member) -> Record:
    attributes = member.attributes  # kept as it is: a Member made of it again copies nothing
    return (fingerprint(attributes), attributes or None)


def _listed_record(_key: str, attributes: Mapping[str, Any]) -> Record:
    return (fingerprint(attributes), attributes or None)


def _plain_record(record: Record) -> Record:
    # Plain dicts pickle several times faster than the models' FrozenDict.
    fp, attributes = record
    return (fp, None if attributes is None else dict(attributes))


async def spill_wanted(
    backend: AudienceBackend,
    members: Iterable[Member] | AsyncIterable[Member],
    *,
    mapping: Callable[[Member], Member] | None = None,
    problems: list[Problem] | None = None,
) -> tuple[SortedSpill, int]:
    """Read every wanted member once, in the backend's canonical form (``mapping`` first), into
    a sealed spill; and how many were read. A bad member is added to ``problems`` when given,
    else all of them raise one :class:`ValidationError` once the input is read (before
    anything is sent)."""
    spill = SortedSpill(_wanted_record, to_file=_plain_record)
    found: list[Problem] = [] if problems is None else problems
    read = 0
    try:
        async for member in aiterate(members):
            read += 1
            try:
                op = backend.prepare(Add(mapping(member) if mapping else member))
            except ValidationError as exc:
                found.extend(exc.problems)
                continue
            assert isinstance(op, Add)
            if spill.put(op.id, op.member):
                await spill.spill()
    except BaseException:
        spill.close()
        raise
    if problems is None and found:
        spill.close()
        raise ValidationError(found)
    try:
        await spill.seal()
    except BaseException:
        spill.close()
        raise
    return spill, read


async def spill_listing(backend: AudienceBackend, audience_id: str) -> SortedSpill:
    """The backend's own listing of the audience, as a sealed spill of (fingerprint,
    attributes) records."""
    spill = SortedSpill(_listed_record, to_file=_plain_record)
    try:
        async for member in backend.iter_members(audience_id):
            if spill.put(member.id, member.attributes):
                await spill.spill()
        await spill.seal()
    except BaseException:
        spill.close()
        raise
    return spill


async def steps(items: Iterator[Any], size: int = STEP) -> AsyncGenerator[list[Any], None]:
    """``items`` (a blocking iterator) a list of ``size`` at a time, each taken in a worker
    thread; the iterator is closed when this ends, however it ends."""
    try:
        while True:
            batch = await anyio.to_thread.run_sync(list, itertools.islice(items, size))
            if not batch:
                return
            yield batch
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _in_order(items: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """``items`` as they come, checked to be in strictly increasing id order: a merge of
    streams sorted otherwise would read a held member as gone and remove it."""
    last: str | None = None
    for item in items:
        if last is not None and not item[0] > last:
            raise RuntimeError(f"held entries out of id order: {item[0]!r} after {last!r}")
        last = item[0]
        yield item


def _same(current: Mapping[str, Any] | None, desired: Mapping[str, Any] | None) -> bool:
    # An upsert sets the attributes it is given and leaves the others: equal where desired says.
    if not desired:
        return True
    current = current or {}
    return all(current.get(k) == v for k, v in desired.items())


class Diff:
    """What to send so that the audience holds exactly the wanted members: an add for each one
    it may not hold as wanted, a removal for each id it may hold that is not wanted; counted by
    kind as it goes.

    ``held`` is the journal's entries (``(id, Entry)``) or, with ``listed``, the provider's
    listing (``(id, (fingerprint, attributes))``), in id order. An entry only ``intended`` was
    never accepted, so its write counts as an add; an entry not settled may be held with any
    value, so it is written again (or removed: an id whose write is unknown is not yet gone).
    """

    def __init__(
        self, wanted: Iterable[tuple[str, Record]], held: Iterable[tuple[str, Any]], *,
        listed: bool, keep_ids: bool = True, journalled: bool = False,
    ) -> None:  # fmt: skip
        self._wanted = wanted
        self._held = held
        self._listed = listed
        self._keep_ids = keep_ids
        self._journalled = journalled
        self._open: AsyncGenerator[Operation, None] | None = None
        self.added = self.changed = self.removed = self.unchanged = 0
        #: The ids changed and removed (memory grows with the changes, not with the audience).
        self.changed_ids: set[str] = set()
        self.removed_ids: set[str] = set()
        self._first_added: list[str] = []
        #: With ``journalled``: the fingerprints of the adds handed on that the journal has
        #: not taken yet, by id (it takes them a block at a time, so this stays small).
        self.fingerprints: dict[str, str] = {}

    def _holds(self, held: Any, fp: str, attributes: Mapping[str, Any] | None) -> bool:
        if self._listed:
            return _same(held[1], attributes)
        entry: Entry = held
        return entry.settled and entry.fingerprint == fp

    def _may_hold(self, held: Any) -> bool:
        return self._listed or held.status != "intended"

    def _compare(self) -> Iterator[tuple[Operation, str | None]]:
        wanted, held = iter(self._wanted), _in_order(self._held)
        want = next(wanted, None)
        have = next(held, None)
        keep = self._keep_ids
        while want is not None or have is not None:
            if have is None or (want is not None and want[0] < have[0]):
                assert want is not None
                key, (fp, attributes) = want
                self.added += 1
                if keep and self.added <= EXAMPLES:
                    self._first_added.append(key)
                yield Add(Member(key, attributes=attributes)), fp
                want = next(wanted, None)
            elif want is None or have[0] < want[0]:
                self.removed += 1
                if keep:
                    self.removed_ids.add(have[0])
                yield Remove(have[0]), None
                have = next(held, None)
            else:
                key, (fp, attributes) = want
                if self._holds(have[1], fp, attributes):
                    self.unchanged += 1
                else:
                    if self._may_hold(have[1]):
                        self.changed += 1
                        if keep:
                            self.changed_ids.add(key)
                    else:
                        self.added += 1
                        if keep and self.added <= EXAMPLES:
                            self._first_added.append(key)
                    yield Add(Member(key, attributes=attributes)), fp
                want, have = next(wanted, None), next(held, None)

    def examples(self) -> dict[str, tuple[str, ...]]:
        """The first ids (in id order, up to :data:`EXAMPLES`) of each kind read so far."""
        return {
            "added": tuple(self._first_added),
            "changed": tuple(heapq.nsmallest(EXAMPLES, self.changed_ids)),
            "removed": tuple(heapq.nsmallest(EXAMPLES, self.removed_ids)),
        }

    def operations(self) -> AsyncIterator[Operation]:
        """The operations to send, in id order (compared in worker-thread steps); closed by
        :meth:`aclose` (which :func:`compared` calls), however the reading ends."""
        self._open = self._operations()
        return self._open

    async def aclose(self) -> None:
        if self._open is not None:
            await self._open.aclose()

    async def _operations(self) -> AsyncGenerator[Operation, None]:
        fingerprints = self.fingerprints if self._journalled else None
        async with contextlib.aclosing(steps(self._compare())) as batches:
            async for batch in batches:
                for op, fp in batch:
                    if fingerprints is not None and fp is not None:
                        fingerprints[op.id] = fp
                    yield op


def digest_sorted(ids: Iterable[str]) -> str:
    """A digest of a set of ids given in id order (the same as :func:`ids_digest` of them)."""
    digest = hashlib.blake2b(digest_size=16)
    for member_id in ids:
        digest.update(member_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def ids_digest(ids: Iterable[str]) -> str:
    """A digest of a set of ids (their order does not matter)."""
    return digest_sorted(sorted(ids))


@contextlib.asynccontextmanager
async def compared(
    backend: AudienceBackend,
    audience_id: str,
    wanted: SortedSpill,
    journal: Journal | None,
    *,
    state: StateStore | None = None,
    scope: str = "",
) -> AsyncIterator[Diff]:
    """The diff of ``wanted`` against what the audience holds now: its listing where it has
    one (the journal adopts it), else the journal's entries once earlier runs' accepted writes
    are waited for; without a journal, the entries of ``state`` as they stand (a dry run), or
    nothing (all is sent)."""
    listing: SortedSpill | None = None
    try:
        if backend.capabilities.list_members:
            listing = await spill_listing(backend, audience_id)
            if journal is not None:
                await journal.adopt(listing)
            diff = Diff(wanted, listing, listed=True, journalled=journal is not None)
        elif journal is not None:
            await journal.settle_pending(backend)
            entries = journal.store.iter_entries(journal.scope, journal.audience)
            diff = Diff(wanted, entries, listed=False, journalled=True)
        elif state is not None:
            diff = Diff(wanted, state.iter_entries(scope, audience_id), listed=False)
        else:
            diff = Diff(wanted, (), listed=False)
        try:
            yield diff
        finally:
            await diff.aclose()
    finally:
        if listing is not None:
            listing.close()


async def dry_diff(
    backend: AudienceBackend,
    audience: str,
    wanted: SortedSpill,
    *,
    state: StateStore | None = None,
    scope: str | None = None,
    missing_ok: bool = False,
) -> tuple[str, Diff]:
    """The audience's id and the diff of a dry run, read to its end: nothing is sent and no
    journal entry is written. The audience is compared as it stands; with ``missing_ok`` one
    that does not exist holds nothing (a run would create it)."""
    try:
        audience_id, exists = (await resolve_audience(backend, audience))[0].id, True
    except NotFoundError:
        if not missing_ok:
            raise
        audience_id, exists = audience, False
    if exists:
        held = ""
        if state is not None and not backend.capabilities.list_members:
            held = await store_scope(state, backend, scope)
        async with compared(backend, audience_id, wanted, None, state=state, scope=held) as diff:
            async for _ in diff.operations():
                pass
        return audience_id, diff
    diff = Diff(wanted, (), listed=False)
    try:
        async for _ in diff.operations():
            pass
    finally:
        await diff.aclose()
    return audience_id, diff
