"""The ``mariadb`` / ``mysql`` binlog source's configuration (one pydantic model; a typo in a key is an error)."""

from __future__ import annotations

import zlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sinks.sql.mariadb import parse_dsn


class MariadbSourceConfig(BaseModel):
    """Change data capture from the row-based binary log of MariaDB (10.5+) or MySQL (8.0+), read as a replica."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mariadb", "mysql"] = "mariadb"
    dsn: str = Field(description="mysql://user:password@host:port/database; the database holds unqualified tables")
    tables: list[str] = Field(min_length=1, description="tables to capture, as table or database.table")
    server_id: int | None = Field(
        None,
        ge=1,
        lt=2**32,
        description="the replica server id this source presents; unique among the server's replicas "
        "(default: derived from the pipeline name)",
    )
    snapshot: Literal["initial", "never"] = Field(
        "initial", description="initial: read the existing rows first; never: only changes from now on"
    )
    snapshot_chunk_size: int = Field(10_000, ge=1, description="rows per key-ordered snapshot query")
    zero_dates: Literal["null", "dead_letter"] = Field(
        "null",
        description="a zero date (0000-00-00, or a zero month or day) cannot be represented: null turns it into "
        "NULL and logs a warning once per column; dead_letter parks the row in the dead-letter queue",
    )
    buffer_events: int = Field(
        20_000, ge=100, description="changes decoded ahead of the pipeline (bounds memory; the reader waits)"
    )
    heartbeat: float = Field(1.0, gt=0, le=30, description="seconds between the server's heartbeats when idle")

    def connect_args(self) -> dict[str, object]:
        return parse_dsn(self.dsn)

    def database(self) -> str:
        return str(self.connect_args()["database"])

    def qualified_tables(self) -> list[tuple[str, str]]:
        """``(database, table)`` for each configured table; unqualified ones live in the DSN's database."""
        db = self.database()
        out = []
        for t in self.tables:
            schema, _, name = t.rpartition(".")
            out.append((schema or db, name))
        return out

    def replica_id(self, pipeline: str) -> int:
        """``server_id``, or a stable id from the pipeline name (kept away from small ids servers use)."""
        if self.server_id is not None:
            return self.server_id
        return 100_000 + zlib.crc32(pipeline.encode()) % 2_000_000_000
