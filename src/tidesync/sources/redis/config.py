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

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidesync.sinks.redis.config import DEFAULT_URL, RedisUrl
from tidesync.sources.payload import PayloadFormat, PayloadMapping


class RedisSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["redis"] = "redis"
    url: RedisUrl = DEFAULT_URL
    streams: list[str] = Field(
        min_length=1, description="streams to read, in a fixed order (add new ones at the end: positions list them)"
    )
    group: str = Field("tidesync", min_length=1, description="consumer group (created, with the stream, if missing)")
    consumer: str | None = Field(None, min_length=1, description="consumer name in the group (default: pipeline)")
    format: PayloadFormat = Field("tidesync", description="payload of each entry's `event` field")
    mapping: PayloadMapping = None
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
