"""``BatchClient``: every call of Batch's Audience API 2.x, typed, one request each.

The client translates; it does not loop, chunk or wait (that is :class:`BatchBackend`'s job, done
by the shared core). Base URL ``https://api.batch.com``, version 2.3 (the original update page's)
unless told otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from ...errors import (
    ConfigurationError,
    Problem,
    ValidationError,
)
from ..base import AsyncPager, CallStats, ClientOptions, Page, ProviderClient, Transport, credential
from ..wire import dumps, structure
from .wire import PROVIDER, BatchAudience, check_audience_name, converter, error_detail

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_RATE_LIMIT", "DEFAULT_VERSION", "BatchClient"]

DEFAULT_BASE_URL = "https://api.batch.com"
DEFAULT_VERSION = "2.3"
#: Requests per second per project key. Batch publishes no limit for the Audience API; two
#: third-party guides report 1 request/s per project for ``/audiences/*`` (views included), and
#: the official Profile API pages describe a token bucket answering 429 without Retry-After.
#: Assumed: that figure, with no burst. Pass ``rate_limit=`` to raise or lower it.
DEFAULT_RATE_LIMIT = 1.0
API_KEY_ENV = "BATCH_API_KEY"
PROJECT_KEY_ENV = "BATCH_PROJECT_KEY"
BASE_URL_ENV = "BATCH_BASE_URL"
_VERSION_RE = re.compile(r"^2\.\d+$")


class BatchClient(ProviderClient):
    """Batch's audience calls. Keys come from the arguments, else from the environment variables
    ``BATCH_API_KEY`` (the REST API key) and ``BATCH_PROJECT_KEY``.

    How it connects is a :class:`~audiencekit.providers.base.ClientOptions` (``options``;
    keyword arguments such as ``base_url=`` or ``timeout=`` change single fields of it). By
    default: ``BATCH_BASE_URL`` when set, else ``https://api.batch.com``, version
    ``api_version`` (2.3), and every request made
    with one project key at one base URL, by any client of the process, draws from one rate
    governor: at most ``rate_limit`` requests per second (1 by default), slower after a 429 and
    back up while requests pass; ``rate_limit=None`` switches it off.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        project_key: str | None = None,
        api_version: str = DEFAULT_VERSION,
        options: ClientOptions | None = None,
        **changes: Any,
    ) -> None:
        api_key = credential(api_key, API_KEY_ENV, "batch REST API key (api_key=)")
        project_key = credential(project_key, PROJECT_KEY_ENV, "batch project key (project_key=)")
        if not _VERSION_RE.match(api_version):
            raise ConfigurationError(f"batch: api_version must look like 2.3, got {api_version!r}")
        self.api_version = api_version
        options = ClientOptions.of(options, **changes).for_provider(
            base_url=DEFAULT_BASE_URL, rate_limit=DEFAULT_RATE_LIMIT, base_url_env=BASE_URL_ENV
        )
        assert isinstance(options.base_url, str)
        self.transport = Transport(
            provider=PROVIDER,
            auth_headers={"Authorization": f"Bearer {api_key}", "X-Batch-Project": project_key},
            parse_error=error_detail,
            options=attrs.evolve(options, base_url=f"{options.base_url.rstrip('/')}/{api_version}"),
            rate_scope=project_key,
        )

    # -- writes: each answers 202 with an indexing token -----------------------------------------

    async def create(self, name: str, *, display_name: str | None = None) -> str:
        """Create an audience of custom user ids; returns the indexing token."""
        _check_name(name)
        body: dict[str, Any] = {"name": name, "type": "custom_ids"}
        if display_name is not None:
            body["display_name"] = display_name
        # Not replay-safe: a replayed create of an audience that got created answers a conflict.
        return await self._write("/audiences/create", dumps(body), replay_safe=False)

    async def update(
        self, name: str, ids: Sequence[dict[str, Any]], *, stats: CallStats | None = None
    ) -> str:
        """Add or remove ids (``[{"action", "id", "attributes"?}]``, at most 10,000)."""
        return await self.update_raw(name, dumps({"name": name, "ids": list(ids)}), stats=stats)

    async def update_raw(self, name: str, body: bytes, *, stats: CallStats | None = None) -> str:
        """:meth:`update` with a body already encoded (the bulk path encodes once)."""
        # Replay-safe: the last action per id wins, so sending the same update again is harmless.
        return await self._write("/audiences/update", body, replay_safe=True, stats=stats)

    async def replace(
        self, name: str, ids: Sequence[dict[str, Any]], *, stats: CallStats | None = None
    ) -> str:
        """Replace every member with ``ids`` (``[{"id", "attributes"?}]``, at most 10,000)."""
        return await self.replace_raw(name, dumps({"name": name, "ids": list(ids)}), stats=stats)

    async def replace_raw(self, name: str, body: bytes, *, stats: CallStats | None = None) -> str:
        """:meth:`replace` with a body already encoded."""
        return await self._write("/audiences/replace", body, replay_safe=True, stats=stats)

    async def remove(self, name: str) -> str | None:
        """Delete the audience; returns the indexing token when Batch gives one (None also when
        the first try removed it and its answer was lost: the replay then finds it gone)."""
        # Removing twice is harmless, and a replay that finds the audience gone after a lost
        # answer is done (``deletes``): Batch deletes with a POST.
        response = await self.transport.request(
            "POST", "/audiences/remove", content=dumps({"name": name}), replay_safe=True,
            deletes=True,
        )  # fmt: skip
        body = self.transport.read_json(response) if response.content else {}
        token = body.get("indexing_token") if isinstance(body, dict) else None
        return str(token) if token else None

    async def _write(
        self, path: str, body: bytes, *, replay_safe: bool, stats: CallStats | None = None
    ) -> str:
        response = await self.transport.request(
            "POST", path, content=body, replay_safe=replay_safe, stats=stats
        )
        data = self.transport.read_json(response)
        token = data.get("indexing_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            # The write may well have been applied: the caller cannot tell, hence "unknown".
            raise self.transport.unexpected(
                f"batch answered {path} with {response.status_code} but no indexing token", data
            )
        return token

    # -- reads ------------------------------------------------------------------------------

    def _audience(self, data: Any) -> BatchAudience:
        return structure(
            converter, data, BatchAudience, provider=PROVIDER, redact=self.transport.redact
        )

    async def view(
        self, name: str, *, indexing_token: str | None = None, stats: CallStats | None = None
    ) -> BatchAudience:
        """One audience, with the indexing state of ``indexing_token`` (else of its last write)."""
        params = {"name": name}
        if indexing_token is not None:
            params["indexing_token"] = indexing_token
        response = await self.transport.request(
            "GET", "/audiences/view", params=params, replay_safe=True, stats=stats
        )
        return self._audience(self.transport.read_json(response))

    def list(self, *, limit: int = 100) -> AsyncPager[BatchAudience]:
        """Every audience of the project, ``limit`` (1 to 100) a page."""
        if not 1 <= limit <= 100:
            raise ValidationError([Problem("limit must be between 1 and 100", field="limit")])

        async def fetch(cursor: str | None) -> Page[BatchAudience]:
            params: dict[str, str | int] = {"limit": limit}
            if cursor is not None:
                params["from"] = cursor
            response = await self.transport.request(
                "GET", "/audiences/list", params=params, replay_safe=True
            )
            data = self.transport.read_json(response)
            if not isinstance(data, dict) or not isinstance(data.get("audiences"), list):
                raise self.transport.unexpected("batch answered a list without audiences", data)
            items = [self._audience(item) for item in data["audiences"]]
            # The end is has_more == false, or a missing next_from (the last page's shape is
            # not documented).
            more = data.get("has_more", True) and data.get("next_from")
            return Page(items, str(data["next_from"]) if more else None, data.get("count"))

        return AsyncPager(fetch, provider=PROVIDER, what="audiences", key=lambda a: a.name)


def _check_name(name: object) -> None:
    problems = check_audience_name(name)
    if problems:
        raise ValidationError(problems)
