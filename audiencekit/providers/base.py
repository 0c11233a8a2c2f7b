"""The extension API: what a provider module builds on. Public and documented; everything a
provider needs from the core is here, and nothing it should not touch.

A provider is a :class:`BaseBackend` subclass (the single calls: create, get, list, delete an
audience) plus a :class:`ChunkWriter` (how one chunk of members is checked and encoded, sent,
and, for a provider that applies writes later, probed), registered with a :class:`Provider`.
The core owns every loop: chunking, last-wins, concurrency, ordering across chunks, splitting a
refused chunk, waiting (:class:`Poller`), retries, rate limits and the cancellation shield (the
:class:`Transport`), accounting for every id. Reading and writing JSON is
:mod:`audiencekit.providers.wire`'s. See the README's "Adding a provider".
"""

from __future__ import annotations

from ..backend import Capabilities
from ..core.base import BaseBackend, aiterate, map_items, prepared_members
from ..core.checks import check_operation
from ..core.chunkwriter import ChunkOutcome, ChunkWriter
from ..core.clock import Clock, Sleep
from ..core.poll import Poller, PollPolicy, wait_until
from ..core.single import create_once, fan_out
from ..core.stats import CallStats
from ..core.transport import (
    PROVIDER_DEFAULT,
    ClientOptions,
    ProviderClient,
    RetryPolicy,
    Transport,
    credential,
)
from ..errors import ErrorDetail, may_have_taken_effect
from ..models import OpenEnum
from ..pages import AsyncPager, Page
from ._registry import Provider, register_provider

__all__ = [
    "PROVIDER_DEFAULT",
    "AsyncPager",
    "BaseBackend",
    "CallStats",
    "Capabilities",
    "ChunkOutcome",
    "ChunkWriter",
    "ClientOptions",
    "Clock",
    "ErrorDetail",
    "OpenEnum",
    "Page",
    "PollPolicy",
    "Poller",
    "Provider",
    "ProviderClient",
    "RetryPolicy",
    "Sleep",
    "Transport",
    "aiterate",
    "check_operation",
    "create_once",
    "credential",
    "fan_out",
    "map_items",
    "may_have_taken_effect",
    "prepared_members",
    "register_provider",
    "wait_until",
]
