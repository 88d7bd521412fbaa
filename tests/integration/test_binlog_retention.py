"""The built-in binlog retention alerts: a MariaDB source's checkpoint in the oldest binlog file, or in a purged one.

The rule values are judged from ``SHOW BINARY LOGS`` on the real server; the
oldest-of-several case is judged from a given file list (purging files on the
shared server is not something a test may do).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pymysql
import pytest

from tests.conftest import MARIADB
from tidesync.observe.alerts import CLEARED, FIRED
from tidesync.observe.binlog import OK, OLDEST, PURGED, retention
from tidesync.observe.monitor import Monitor
from tidesync.sources.mariadb.config import MariadbSourceConfig
from tidesync.testing import FakeClock

FILES = ["mariadb-bin.000007", "mariadb-bin.000008", "mariadb-bin.000009"]


@pytest.mark.parametrize(
    ("position", "files", "value"),
    [
        ((8, 4, 0, ""), FILES, OK),
        ((9, 4, -1, ""), FILES, OK),
        ((7, 123, 2, "0-1-5"), FILES, OLDEST),
        ((6, 123, 0, ""), FILES, PURGED),
        ((7, 4, 0, ""), FILES[:1], OK),  # the only file is the one being written: never purged
        ((0, 1, 2, 3), FILES, None),  # a snapshot position: nothing to judge
        (None, FILES, None),
    ],
)
def test_retention_value(position: Any, files: list[str], value: float | None) -> None:
    assert retention(position, files) == value


def server_files() -> list[str]:
    conn = pymysql.connect(**MARIADB)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [str(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()


async def test_purged_checkpoint_fires_and_a_new_snapshot_clears(mariadb_database: str) -> None:
    clock = FakeClock()
    newest = int(server_files()[-1].rsplit(".", 1)[1])
    source = SimpleNamespace(config=MariadbSourceConfig(type="mariadb", dsn=mariadb_database, tables=["t"]))
    runner = SimpleNamespace(name="p", state_name="running", clock=clock, blocked=None, source=source)
    runner.position = (newest, 4, 0, "")

    class Store:
        async def dlq_count(self, pipeline: str | None = None) -> int:
            return 0

        async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
            return {}

    monitor = Monitor(SimpleNamespace(runners=[runner]), Store(), alerts=None, clock=clock)  # type: ignore[arg-type]

    async def tick() -> list[tuple[str, str]]:
        clock.advance(monitor.interval)
        return sorted((x.rule, x.kind) for x in await monitor.tick())

    assert await tick() == []
    assert monitor.readings.binlog["p"] == OK
    runner.position = (newest + 1000, 4, 0, "")  # a file the server does not have (purged, or a reset server)
    assert await tick() == [("binlog-oldest", FIRED), ("binlog-purged", FIRED)]
    assert await tick() == []  # no repeats while it stays gone
    runner.position = (0, 0, 0, 0)  # a new snapshot began: nothing to judge, the last value stays
    assert await tick() == []
    runner.position = (newest, 4, 0, "")  # the snapshot done, streaming from a file the server has
    assert await tick() == [("binlog-oldest", CLEARED), ("binlog-purged", CLEARED)]
