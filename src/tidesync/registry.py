"""Plugins by registry: a ``type:`` name maps to a config model and a factory.

Built-in connectors register by import path, so that ``tidesync validate`` does
not import every driver. Third-party connectors register through package entry
points in the groups ``tidesync.sources``, ``tidesync.sinks`` and
``tidesync.transforms``; an entry point names either a :class:`Plugin` or a
callable returning one. An unknown type is a config error that lists the known
ones.

A plugin's config model is a pydantic model with ``extra="forbid"`` and a
``type`` field; it gets the same validation, line numbers and secret handling
as the built-ins.
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel

from tidesync.errors import ConfigError

Kind = Literal["source", "sink", "transform"]
KINDS: tuple[Kind, ...] = ("source", "sink", "transform")


def _resolve(ref: Any) -> Any:
    if isinstance(ref, str) and ":" in ref:
        module, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return ref


@dataclass(frozen=True)
class Plugin:
    """``config_model`` validates the mapping under the plugin's key; ``factory(config)`` builds it.

    Both may be given as ``"module:attribute"`` strings, imported on first use.
    """

    kind: Kind
    type: str
    config_model: builtins.type[BaseModel] | str
    factory: Callable[[Any], Any] | str
    summary: str = ""

    def model(self) -> builtins.type[BaseModel]:
        return _resolve(self.config_model)  # type: ignore[no-any-return]

    def build(self, config: Any) -> Any:
        return _resolve(self.factory)(config)


class Registry:
    def __init__(self) -> None:
        self._plugins: dict[tuple[Kind, str], Plugin] = {}
        self._entry_points_loaded = False

    def register(self, plugin: Plugin, *, replace: bool = False) -> Plugin:
        key = (plugin.kind, plugin.type)
        if key in self._plugins and not replace:
            raise ValueError(f"a {plugin.kind} named {plugin.type!r} is already registered")
        self._plugins[key] = plugin
        return plugin

    def unregister(self, kind: Kind, type_: str) -> None:
        self._plugins.pop((kind, type_), None)

    def get(self, kind: Kind, type_: str) -> Plugin:
        self.load_entry_points()
        plugin = self._plugins.get((kind, type_))
        if plugin is None:
            known = ", ".join(self.names(kind)) or "none"
            raise ConfigError(f"unknown {kind} type {type_!r}; known {kind} types: {known}")
        return plugin

    def names(self, kind: Kind) -> list[str]:
        self.load_entry_points()
        return sorted(t for k, t in self._plugins if k == kind)

    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for kind in KINDS:
            for ep in entry_points(group=f"tidesync.{kind}s"):
                obj = ep.load()
                plugin = obj if isinstance(obj, Plugin) else obj()
                if plugin.kind != kind:
                    raise ConfigError(f"entry point {ep.name!r} in tidesync.{kind}s registers a {plugin.kind}")
                self.register(plugin, replace=True)


REGISTRY = Registry()


def register(kind: Kind, type_: str, config_model: Any, factory: Any, summary: str = "") -> Plugin:
    return REGISTRY.register(Plugin(kind, type_, config_model, factory, summary))


def _builtins() -> None:
    # Connectors add their line here as they land: kind, type, config model, factory.
    builtin: list[tuple[Kind, str, str, str, str]] = [
        ("source", "sqlite", "tidesync.sources.sqlite:SqliteSourceConfig", "tidesync.sources.sqlite:SqliteSource",
         "SQLite change capture by triggers into a change log"),
        ("source", "sql_poll", "tidesync.sources.polling.config:SqlPollConfig",
         "tidesync.sources.polling.source:SqlPollSource",
         "SQL tables (Postgres, MariaDB, SQLite) polled by cursor column, with look-back and delete detection"),
        ("sink", "sqlite", "tidesync.sinks.sql.sqlite:SqliteSinkConfig", "tidesync.sinks.sql.sqlite:SqliteSink",
         "SQLite tables: upsert by key, field-level updates, exactly-once"),
        ("source", "postgres", "tidesync.sources.postgres.config:PostgresSourceConfig",
         "tidesync.sources.postgres:PostgresSource",
         "PostgreSQL change data capture: logical replication (pgoutput), consistent snapshot, exact types"),
        ("sink", "discard", "tidesync.sinks.null:NullSinkConfig", "tidesync.sinks.null:NullSink",
         "discards events (benchmarks, dry runs)"),
        ("sink", "null", "tidesync.sinks.null:NullSinkConfig", "tidesync.sinks.null:NullSink",
         "alias of discard (quote it in YAML: type: \"null\")"),
        ("source", "webhook", "tidesync.sources.webhook:WebhookSourceConfig", "tidesync.sources.webhook:WebhookSource",
         "signed webhooks (Stripe, HubSpot, GitHub, Standard Webhooks, HMAC) through a durable intake journal"),
        ("sink", "webhook", "tidesync.sinks.webhook:WebhookSinkConfig", "tidesync.sinks.webhook:WebhookSink",
         "POSTs events as signed Standard Webhooks, with persisted retries and endpoint disabling"),
        ("sink", "postgres", "tidesync.sinks.sql.config:PostgresSinkConfig", "tidesync.sinks.sql.postgres:PostgresSink",
         "Postgres tables: COPY-staged upserts, field-level updates, exactly-once"),
        ("sink", "mariadb", "tidesync.sinks.sql.config:MariadbSinkConfig", "tidesync.sinks.sql.mariadb:MariadbSink",
         "MariaDB/MySQL tables: multi-row upserts, field-level updates, exactly-once"),
        ("sink", "mysql", "tidesync.sinks.sql.config:MariadbSinkConfig", "tidesync.sinks.sql.mariadb:MariadbSink",
         "alias of mariadb"),
        ("source", "stripe", "tidesync.sources.http.config:StripeSourceConfig",
         "tidesync.sources.http.stripe:StripeSource",
         "Stripe's Events API as a change feed (30 days), list endpoints for a first snapshot"),
        ("source", "hubspot", "tidesync.sources.http.config:HubSpotSourceConfig",
         "tidesync.sources.http.hubspot:HubSpotSource",
         "HubSpot CRM objects polled through search by last-modified time, diffed field by field"),
        ("source", "hybrid", "tidesync.sources.hybrid.config:HybridConfig", "tidesync.sources.hybrid:HybridSource",
         "a primary event source with a fallback poller: merged, de-duplicated, missed_by_primary counted"),
        ("sink", "redis", "tidesync.sinks.redis.config:RedisSinkConfig", "tidesync.sinks.redis.sink:RedisSink",
         "Redis Streams: XADD per event, exactly once by an applied position stored in the same Lua step"),
        ("source", "redis", "tidesync.sources.redis.config:RedisSourceConfig",
         "tidesync.sources.redis.source:RedisSource",
         "Redis Streams consumer group (XREADGROUP), acked only after the engine's checkpoint"),
        ("sink", "nats", "tidesync.sinks.nats.config:NatsSinkConfig", "tidesync.sinks.nats.sink:NatsSink",
         "NATS JetStream: per-key ordered publishes, de-duplicated by Nats-Msg-Id within the duplicate window"),
        ("source", "nats", "tidesync.sources.nats.config:NatsSourceConfig", "tidesync.sources.nats.source:NatsSource",
         "NATS JetStream durable pull consumer, acked only after the engine's checkpoint"),
        ("sink", "rabbitmq", "tidesync.sinks.rabbitmq.config:RabbitMQSinkConfig",
         "tidesync.sinks.rabbitmq.sink:RabbitMQSink",
         "RabbitMQ: confirmed, persistent, per-key ordered publishes carrying the event's message_id"),
        ("source", "rabbitmq", "tidesync.sources.rabbitmq.config:RabbitMQSourceConfig",
         "tidesync.sources.rabbitmq.source:RabbitMQSource",
         "RabbitMQ queue, acked after the engine's checkpoint, redeliveries dropped by message_id"),
        ("sink", "hubspot", "tidesync.sinks.hubspot.config:HubSpotSinkConfig", "tidesync.sinks.hubspot:HubSpotSink", "HubSpot CRM objects: batch upserts by a unique property, updates by an ID map, archives, associations"),  # noqa: E501
        ("source", "mariadb", "tidesync.sources.mariadb.config:MariadbSourceConfig", "tidesync.sources.mariadb.source:MariadbSource", "MariaDB change data capture from the row-based binlog: consistent snapshot, exact types"),  # noqa: E501
        ("source", "mysql", "tidesync.sources.mariadb.config:MariadbSourceConfig", "tidesync.sources.mariadb.source:MariadbSource", "MySQL change data capture from the row-based binlog (alias of the mariadb source)"),  # noqa: E501
        ("sink", "mqtt", "tidesync.sinks.mqtt.config:MqttSinkConfig", "tidesync.sinks.mqtt.sink:MqttSink",
         "MQTT 5: QoS 1 publishes awaited for PUBACK, per-key order, a tidesync-id user property per message"),
        ("source", "mqtt", "tidesync.sources.mqtt.config:MqttSourceConfig", "tidesync.sources.mqtt.source:MqttSource",
         "MQTT persistent session, acked once journaled in the state store, de-duplicated by tidesync-id"),
        ("sink", "stripe", "tidesync.sinks.stripe:StripeSinkConfig", "tidesync.sinks.stripe:StripeSink",
         "Stripe customers, products and prices: one request per change, Idempotency-Key, prices replaced"),
        ("source", "csv", "tidesync.sheets.config:SheetSourceConfig", "tidesync.sheets.source:SheetSource", "a watched CSV file, diffed by key (exact changed); bad cells dead-lettered"),  # noqa: E501
        ("source", "xlsx", "tidesync.sheets.config:SheetSourceConfig", "tidesync.sheets.source:SheetSource", "a watched Excel sheet, diffed by key (exact changed); bad cells dead-lettered"),  # noqa: E501
        ("sink", "csv", "tidesync.sheets.config:SheetSinkConfig", "tidesync.sheets.sink:SheetSink", "a CSV file: rows upserted by key, atomic rewrite per batch"),  # noqa: E501
        ("sink", "xlsx", "tidesync.sheets.config:SheetSinkConfig", "tidesync.sheets.sink:SheetSink", "an Excel sheet: mapped cells upserted by key; formulas, formatting, other sheets kept"),  # noqa: E501
        ("source", "gsheets", "tidesync.sheets.gsheets_config:GSheetsSourceConfig", "tidesync.sheets.gsheets_source:GSheetsSource", "a Google sheet polled by Drive revision, diffed by key (exact changed)"),  # noqa: E501
        ("sink", "gsheets", "tidesync.sheets.gsheets_config:GSheetsSinkConfig", "tidesync.sheets.gsheets_sink:GSheetsSink", "a Google sheet: mapped cells upserted by key via the Sheets API v4"),  # noqa: E501
    ]
    for kind, type_, model, factory, summary in builtin:
        register(kind, type_, model, factory, summary)


_builtins()
