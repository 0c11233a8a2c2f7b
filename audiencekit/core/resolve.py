"""One rule for naming an audience: by its id or by its name, on every provider.

Every workflow, the Mirror and the command line resolve what the user wrote through
:func:`resolve_audience`, so that ``"vip"`` means the same audience everywhere.
"""

from __future__ import annotations

from ..backend import AudienceBackend
from ..errors import ConfigurationError, ConflictError, NotFoundError, ValidationError
from ..models import Audience, Channel

__all__ = ["resolve_audience"]


async def resolve_audience(
    backend: AudienceBackend,
    ref: str,
    *,
    create: bool = False,
    channel: Channel | str | None = None,
) -> tuple[Audience, bool]:
    """The audience ``ref`` names, and whether this call created it.

    ``ref`` is tried as an id first. A provider that answers "no such id" (Dexatel answers a
    name with 400/1302, read as :class:`~audiencekit.NotFoundError`) or refuses it before
    sending (:class:`~audiencekit.ValidationError`) is then asked for an audience of that name.
    Two audiences of one name are a :class:`~audiencekit.ConfigurationError` (give the id);
    none is a :class:`~audiencekit.NotFoundError`, unless ``create`` (with ``channel`` where
    the provider needs one) creates it; one that another run created meanwhile is found.
    """
    try:
        return await backend.get_audience(ref), False
    except (NotFoundError, ValidationError):
        pass  # not an id: a name, perhaps
    named = [audience async for audience in backend.list_audiences() if audience.name == ref]
    if len(named) > 1:
        raise ConfigurationError(
            f"{backend.provider} has {len(named)} audiences named {ref!r}; give one by its id "
            f"({', '.join(a.id for a in named)})"
        )
    if named:  # read again: a listing may leave out details (Dexatel's omits the size)
        return await backend.get_audience(named[0].id), False
    if not create:
        raise NotFoundError(
            f"{backend.provider} has no audience with the id or name {ref!r}",
            provider=backend.provider,
            status=404,
        )
    try:
        return await backend.create_audience(ref, channel=channel), True
    except ConflictError:
        pass  # created meanwhile by another run: found below
    return await resolve_audience(backend, ref, create=False)
