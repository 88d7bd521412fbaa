"""Config models, registry entries and the null sink (no database)."""

from __future__ import annotations

import pydantic
import pytest

from tidesync.event import ChangeEvent
from tidesync.protocols import Context, Sink
from tidesync.registry import REGISTRY
from tidesync.sinks.null import NullSink, NullSinkConfig
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink, parse_dsn


@pytest.mark.parametrize(
    ("type_", "options", "model", "factory"),
    [
        ("postgres", {"dsn": "postgresql://u@h/db"}, PostgresSinkConfig, "PostgresSink"),
        ("mariadb", {"dsn": "mysql://u@h/db"}, MariadbSinkConfig, "MariadbSink"),
        ("mysql", {"dsn": "mysql://u@h/db"}, MariadbSinkConfig, "MariadbSink"),
        ("sqlite", {"path": "x.db"}, SqliteSinkConfig, "SqliteSink"),
        ("null", {}, NullSinkConfig, "NullSink"),
    ],
)
def test_registry_builds_each_sink(type_: str, options: dict[str, str], model: type, factory: str) -> None:
    plugin = REGISTRY.get("sink", type_)
    config = plugin.model().model_validate({"type": type_, **options})
    assert isinstance(config, model)
    sink = plugin.build(config)
    assert type(sink).__name__ == factory and isinstance(sink, Sink)


def test_config_rejects_typos_and_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError, match="create_table"):
        PostgresSinkConfig.model_validate({"dsn": "postgresql:///x", "create_table": True})
    with pytest.raises(pydantic.ValidationError, match="evolve"):
        SqliteSinkConfig.model_validate({"path": "x.db", "evolve": "ignore"})
    with pytest.raises(pydantic.ValidationError, match="mysql://"):
        MariadbSinkConfig.model_validate({"dsn": "postgresql://u@h/db"})
    cfg = SqliteSinkConfig(path="x.db")
    assert (cfg.create_tables, cfg.evolve, cfg.keys, cfg.tables) == (False, "block", {}, {})


def test_mariadb_dsn_is_parsed() -> None:
    assert parse_dsn("mysql://ann:p%40ss@db.example:3307/shop?connect_timeout=3") == {
        "host": "db.example",
        "port": 3307,
        "user": "ann",
        "password": "p@ss",
        "database": "shop",
        "connect_timeout": 3,
    }
    assert isinstance(MariadbSink(MariadbSinkConfig(dsn="mysql://root@127.0.0.1/x")), MariadbSink)


async def test_null_sink_discards_and_counts() -> None:
    sink = NullSink()
    await sink.open(Context(pipeline="p", name="null", state=None))  # type: ignore[arg-type]
    await sink.write([ChangeEvent("e", (1,), "insert", after={"id": 1})] * 3)
    await sink.write([])
    await sink.close()
    assert (sink.events, sink.batches) == (3, 2)
