"""Configuration of a Redis Streams sink.

::

    sink:
      type: redis
      url: redis://127.0.0.1:6379
      stream: "cdc.{entity}"       # {entity} and {pipeline} are filled in per event
      maxlen: 1000000              # XADD MAXLEN ~ 1000000: approximate trimming; null: never trim
      format: tidesync
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMATS = ("tidesync", "debezium", "cloudevents")
PLACEHOLDERS = frozenset({"entity", "pipeline"})
DEFAULT_URL = "redis://127.0.0.1:6379"

# The connection key the redis sink and source share.
RedisUrl = Annotated[
    str, Field(pattern=r"^(redis|rediss|unix)://", description="redis://[user:password@]host:port[/db]")
]


def check_template(template: str) -> str:
    """``template`` if every ``{name}`` in it is one of :data:`PLACEHOLDERS`; else ValueError naming the rest."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; known: {sorted(PLACEHOLDERS)}")
    return template


class RedisSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["redis"] = "redis"
    url: RedisUrl = DEFAULT_URL
    stream: str = Field(
        "cdc.{entity}", min_length=1, description="stream name per event; {entity} and {pipeline} are filled in"
    )
    maxlen: int | None = Field(
        1_000_000,
        ge=1,
        description="approximate stream length cap (XADD MAXLEN ~): older entries are trimmed, read or not; "
        "null: never trim",
    )
    format: Literal["tidesync", "debezium", "cloudevents"] = Field(
        "tidesync", description="payload of each entry (field `event`): tidesync JSON, Debezium or CloudEvents"
    )
    timeout: float = Field(10.0, gt=0, description="seconds for one connection attempt or one command")
    key_prefix: str = Field(
        "tidesync", min_length=1, description="the applied position is kept at <key_prefix>:applied:<pipeline>:<sink>"
    )
    chunk: int = Field(2000, ge=1, le=100_000, description="events per MULTI/EXEC transaction")

    @field_validator("stream")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)
