"""Configuration of a Redis Streams source.

::

    source:
      type: redis
      url: redis://127.0.0.1:6379
      streams: [cdc.public.orders]
      group: apply
      consumer: null        # default: the pipeline's name
      format: tidesync
      start: "0"            # where a new group starts: "0" the whole stream, "$" only new entries
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RedisSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["redis"] = "redis"
    url: str = Field(
        "redis://127.0.0.1:6379",
        pattern=r"^(redis|rediss|unix)://",
        description="redis://[user:password@]host:port[/db]",
    )
    streams: list[str] = Field(
        min_length=1, description="streams to read, in a fixed order (add new ones at the end: positions list them)"
    )
    group: str = Field("tidesync", min_length=1, description="consumer group (created, with the stream, if missing)")
    consumer: str | None = Field(None, min_length=1, description="consumer name in the group (default: pipeline)")
    format: Literal["tidesync", "debezium", "cloudevents", "json"] = Field(
        "tidesync", description="payload of each entry's `event` field"
    )
    mapping: dict[str, Any] | None = Field(
        None,
        description="format json: the generic webhook mapping (entity, key, op, ...); format debezium: "
        "{key: [columns]} for records written by Debezium itself (their key is not in the value)",
    )
    start: Literal["0", "$"] = Field(
        "0", description='where a new group starts: "0" every entry in the stream, "$" only entries added after'
    )
    timeout: float = Field(10.0, gt=1, description="seconds for one connection attempt or one command")

    @field_validator("streams")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a stream is listed twice")
        return value
