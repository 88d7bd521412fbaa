"""The ``mariadb`` binlog source under the conformance suite: a fresh database per harness, its own replica id.

The table carries a ``born`` DATE beside the suite's ``id, name, qty``; the source
runs with ``zero_dates: dead_letter``, so the harness's one bad record is a row
holding the zero date 0000-00-00 (written with an empty sql_mode, as a legacy
application would): the source cannot represent it and must report it in its
place in the stream (``batch.rejected``) and go on.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pymysql

from tidesync.protocols import Source

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "autocommit": True}


class MariadbBinlogSourceHarness:
    entity = "items"  # entities are database.table: ts_conf_xxx.items
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.db = f"ts_conf_{uuid.uuid4().hex[:10]}"
        self.server_id = random.randint(100_000, 2_000_000_000)
        self._admin(f"CREATE DATABASE `{self.db}`")
        self._admin(f"CREATE TABLE `{self.db}`.items (id int PRIMARY KEY, name text, qty int, born date NULL)")

    def _admin(self, sql: str, rows: list[tuple[Any, ...]] | None = None, *, sql_mode: str | None = None) -> None:
        conn = pymysql.connect(**MARIADB, charset="utf8mb4")
        try:
            with conn.cursor() as cur:
                if sql_mode is not None:
                    cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
                if rows is None:
                    cur.execute(sql)
                else:
                    cur.executemany(sql, rows)
        finally:
            conn.close()

    def make_source(self) -> Source:
        from tidesync.sources.mariadb import MariadbSource, MariadbSourceConfig

        return MariadbSource(
            MariadbSourceConfig(
                dsn=f"mysql://root@127.0.0.1:3306/{self.db}",
                tables=["items"],
                server_id=self.server_id,
                snapshot="never",
                zero_dates="dead_letter",
            )
        )

    def insert(self, ids: range) -> None:
        self._admin(f"INSERT INTO `{self.db}`.items VALUES (%s, %s, %s, NULL)", [(i, f"item {i}", 0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._admin(f"UPDATE `{self.db}`.items SET qty = %s WHERE id = %s", [(qty, i) for i in ids])

    def delete(self, ids: range) -> None:
        self._admin(f"DELETE FROM `{self.db}`.items WHERE id = %s", [(i,) for i in ids])

    def feed_bad_input(self, key: int) -> None:
        self._admin(
            f"INSERT INTO `{self.db}`.items VALUES (%s, %s, 0, '0000-00-00')", [(key, f"item {key}")], sql_mode=""
        )

    def cleanup(self) -> None:
        self._admin(f"DROP DATABASE IF EXISTS `{self.db}`")
