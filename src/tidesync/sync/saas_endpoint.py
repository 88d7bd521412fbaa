"""The endpoint and entity of a sync side whose source is an app's API (``type: hubspot`` / ``type: stripe``,
or a ``type: hybrid`` source whose fallback is one: webhooks first, that poller behind them).

Both come from the app's polling source config (:func:`app_config`: the
source, or the hybrid's fallback):

- hubspot: a :class:`~tidesync.sinks.hubspot.endpoint.HubSpotEndpoint` on the
  source's credentials, ``base_url``, ``rate_limit`` and ``http``, for the
  object the side's ``table:`` names (default: the source's only object);
  inserts upsert by the side's ``id_property`` (default ``email`` for
  contacts). Entity: the object's (``hubspot.contact``).
- stripe: a :class:`~tidesync.sinks.stripe.endpoint.StripeEndpoint` on the
  source's key, ``base_url``, ``rate_limit`` and ``http``. Entity: ``stripe.customer``.

Neither has replication origins: the sync knows its own writes' echoes by
the ledger of values written (:mod:`.echo`).
"""

from __future__ import annotations

from typing import Any

from tidesync.sources.http.client import ApiClient
from tidesync.sync.endpoint import Endpoint

SAAS_TYPES = ("hubspot", "stripe")


class ApiSide:
    """What an API side's endpoint shares: its one HTTP client (made at ``open``), and the count of requests
    it sent, retries included, across reopenings (tests, metrics)."""

    _client: ApiClient | None = None
    _sent = 0
    writes = 0  # write requests sent

    @property
    def requests(self) -> int:
        return self._sent + (self._client.requests if self._client is not None else 0)

    @property
    def client(self) -> ApiClient:
        assert self._client is not None, "open() first"
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            self._sent += client.requests
            await client.close()


def app_config(source: Any) -> Any:
    """The app's polling source config of a side: the source itself (``type: hubspot`` / ``stripe``), or a
    ``type: hybrid`` source's fallback when that is one; None for any other source."""
    if getattr(source, "type", None) in SAAS_TYPES:
        return source
    if getattr(source, "type", None) == "hybrid":
        fallback = source.fallback_model
        if getattr(fallback, "type", None) in SAAS_TYPES:
            return fallback
    return None


def is_saas(source: Any) -> bool:
    return app_config(source) is not None


def id_property(side_cfg: Any, object_type: str) -> str | None:
    return str(side_cfg.id_property) if side_cfg.id_property else ("email" if object_type == "contacts" else None)


def saas_endpoint(side_cfg: Any, source: Any) -> Endpoint:
    app = app_config(source)
    if app.type == "hubspot":
        from tidesync.sinks.hubspot.endpoint import HubSpotEndpoint
        from tidesync.sinks.hubspot.records import pick_object

        obj = pick_object(app, side_cfg.table)
        return HubSpotEndpoint(app, side_cfg.key, object_type=obj.type, id_property=id_property(side_cfg, obj.type))
    from tidesync.sinks.stripe.endpoint import StripeEndpoint

    return StripeEndpoint(app, side_cfg.key)


def saas_entity(side_cfg: Any, source: Any) -> str:
    app = app_config(source)
    if app.type == "hubspot":
        from tidesync.sinks.hubspot.records import pick_object

        return pick_object(app, side_cfg.table).entity_name
    return "stripe.customer"
