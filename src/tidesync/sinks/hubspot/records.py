"""What a HubSpot sync side needs of the API besides the sink's calls, and of its source's config.

:class:`RecordsApi` adds to :class:`~.api.HubSpotApi` (same translation of
errors, same 207 splitting) the reads of records: ``batch/read`` (by id or by
a unique ``idProperty``), ``batch/create``, search, and the paged listing
``GET /crm/v3/objects/{type}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tidesync.clock import Clock
from tidesync.errors import ConfigError
from tidesync.sinks.hubspot.api import BatchAnswer, HubSpotApi, _answer
from tidesync.sources.http.auth import BearerKey, Credential, OAuth2Refresh
from tidesync.sources.http.config import HubSpotObject, HubSpotSourceConfig


class RecordsApi(HubSpotApi):
    """The sink's calls, and the reads a sync side needs besides them."""

    async def read_records(
        self, object_type: str, refs: Sequence[str], properties: Sequence[str], id_property: str | None = None
    ) -> BatchAnswer:
        body: dict[str, Any] = {"inputs": [{"id": r} for r in refs], "properties": list(properties)}
        if id_property:
            body["idProperty"] = id_property
        return _answer(await self._post(f"/crm/v3/objects/{object_type}/batch/read", body))

    async def create(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> BatchAnswer:
        return _answer(await self._post(f"/crm/v3/objects/{object_type}/batch/create", {"inputs": list(inputs)}))

    async def search(self, object_type: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        return _answer(await self._post(f"/crm/v3/objects/{object_type}/search", body)).results

    async def page(
        self, object_type: str, properties: Sequence[str], after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        path = f"/crm/v3/objects/{object_type}"
        params = {"limit": str(limit), "properties": ",".join(properties), "archived": "false"}
        if after:
            params["after"] = after
        with self._translated(path):
            body = await self.client.get(path, params)
        results = [r for r in (body.get("results") or []) if isinstance(r, dict)] if isinstance(body, dict) else []
        nxt = ((body.get("paging") or {}).get("next") or {}).get("after") if isinstance(body, dict) else None
        return results, str(nxt) if nxt else None


def credential(config: HubSpotSourceConfig, clock: Clock) -> Credential:
    """The side source's credential: its private app token, or its OAuth 2 refresh grant."""
    o = config.oauth
    if o is None:
        assert config.token is not None
        return BearerKey(config.token, "HubSpot access token")
    url = o.token_url or f"{config.base_url.rstrip('/')}/oauth/v1/token"
    return OAuth2Refresh(url, o.client_id, o.client_secret, o.refresh_token, refresh_margin=o.refresh_margin,
                         clock=clock)  # fmt: skip


def pick_object(config: HubSpotSourceConfig, object_type: str | None) -> HubSpotObject:
    """The source's object a side writes: the one named (its type), else the only one."""
    if object_type is None and len(config.objects) == 1:
        return config.objects[0]
    for obj in config.objects:
        if obj.type == object_type:
            return obj
    known = ", ".join(o.type for o in config.objects)
    raise ConfigError(f"a hubspot sync side writes one object: name it with table: (the source reads {known})")
