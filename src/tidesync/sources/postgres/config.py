"""The ``postgres`` source's configuration (one pydantic model; a typo in a key is an error)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.retry import RetryPolicy

_SLOT_CHARS = re.compile(r"[^a-z0-9_]")


class ReconnectConfig(BaseModel):
    """How the source reconnects a lost connection: exponential backoff with full jitter.

    Attempts go on for ``reconnect_timeout`` seconds after the first failed one.
    """

    model_config = ConfigDict(extra="forbid")

    initial_delay: float = Field(0.1, gt=0, description="seconds before the second attempt (at most; jittered)")
    max_delay: float = Field(5.0, gt=0, description="longest wait between two attempts")


class PostgresSourceConfig(BaseModel):
    """Change data capture from PostgreSQL 13+ through logical replication (pgoutput)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["postgres"] = "postgres"
    dsn: str = Field(description="libpq connection string or URL of the database to capture")
    tables: list[str] = Field(
        min_length=1, description="tables to capture, as schema.table (schema defaults to public)"
    )
    publication: str | None = Field(
        None,
        description="publication to read; created for `tables` when missing (default: tidesync_<pipeline>)",
    )
    slot: str | None = Field(
        None, pattern=r"^[a-z0-9_]{1,63}$", description="replication slot name (default: tidesync_<pipeline>)"
    )
    snapshot: Literal["initial", "never"] = Field(
        "initial", description="initial: read the existing rows first; never: only changes from now on"
    )
    snapshot_chunk_size: int = Field(10_000, ge=1, description="rows per key-ordered snapshot query")
    progress: bool = Field(
        True, description="show snapshot and re-snapshot progress: a bar on a terminal, a log line every 10s elsewhere"
    )
    proto_version: Literal[1, 2] | None = Field(
        None, description="pgoutput protocol version (default: 2 on PostgreSQL 14+, else 1)"
    )
    streaming: bool | None = Field(
        None,
        description="let the server stream large in-progress transactions (protocol 2; default: on with protocol 2)",
    )
    heartbeat_interval: float = Field(
        10.0, ge=0, description="seconds between heartbeat messages that keep the slot moving when idle (0: off)"
    )
    status_interval: float = Field(1.0, gt=0, le=30, description="seconds between status updates to the server")
    work_dir: str = Field(".tidesync/postgres", description="where streamed transactions are spilled until commit")
    shadow: Literal["fingerprint", "rows", "off"] | bool = Field(
        "fingerprint",
        description="keep each row's last values (in work_dir) so that an update's `changed` lists exactly the "
        "columns it changed: fingerprint (the default; long values kept as digests), rows (values kept whole, "
        "and unchanged TOASTed columns filled in), off (updates carry every column: whole-row updates); "
        "true means rows, false off",
    )
    shadow_cache_rows: int = Field(50_000, ge=1000, description="rows' values kept in memory (the rest on disk)")

    @property
    def shadow_mode(self) -> Literal["fingerprint", "rows", "off"]:
        if self.shadow is True:
            return "rows"
        if self.shadow is False:
            return "off"
        return self.shadow
    reconnect_timeout: float = Field(
        60.0, ge=0, description="how long to try reconnecting after a lost connection before failing"
    )
    reconnect: ReconnectConfig = Field(
        default_factory=lambda: ReconnectConfig.model_validate({}),
        description="the waits between reconnect attempts (replication stream and catalog connection)",
    )
    buffer_messages: int = Field(
        100_000, ge=1000, description="received messages buffered ahead of the pipeline (bounds memory)"
    )

    def reconnect_policy(self) -> RetryPolicy:
        """The schedule of reconnect attempts: ``reconnect``'s waits, for ``reconnect_timeout`` seconds."""
        r = self.reconnect
        return RetryPolicy(initial_delay=r.initial_delay, max_delay=r.max_delay, max_age=self.reconnect_timeout)

    def slot_name(self, pipeline: str) -> str:
        return self.slot or default_name(pipeline)

    def publication_name(self, pipeline: str) -> str:
        return self.publication or default_name(pipeline)


def default_name(pipeline: str) -> str:
    """``tidesync_<pipeline>``, lower-cased, other characters as ``_``, at most 63 characters."""
    return ("tidesync_" + _SLOT_CHARS.sub("_", pipeline.lower()))[:63]
