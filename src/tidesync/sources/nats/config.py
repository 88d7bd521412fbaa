"""Configuration of the NATS JetStream source.

::

    source:
      type: nats
      url: nats://127.0.0.1:4222
      stream: CDC
      consumer: apply-1              # durable pull consumer; one reading process per consumer
      subjects: ["cdc.>"]
      format: tidesync
      start: {sequence: 1}           # or {time: "2026-01-01T00:00:00Z"}: only for a new consumer
      ack_wait: 300
      max_ack_pending: 20000
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.sinks.nats.config import NAME, NATS_URL
from tidesync.sources.payload import PayloadFormat, PayloadMapping


class StartAt(BaseModel):
    """Where a new consumer starts (without a checkpoint): a stream sequence or a time, not both."""

    model_config = ConfigDict(extra="forbid")

    sequence: int | None = Field(None, ge=1, description="the first stream sequence to read")
    time: dt.datetime | None = Field(None, description="read messages stored at or after this time")

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.sequence is None) == (self.time is None):
            raise ValueError("start takes one of sequence or time")
        return self


class NatsSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["nats"] = "nats"
    url: str = Field("nats://127.0.0.1:4222", pattern=NATS_URL, description="the NATS server (nats:// or tls://)")
    stream: str = Field(pattern=NAME, description="the JetStream stream to read")
    consumer: str = Field(pattern=NAME, description="durable consumer name (one reading process per consumer)")
    subjects: list[str] = Field(default_factory=lambda: [">"], min_length=1, description="subjects to read")
    format: PayloadFormat = Field("tidesync", description="payload format")
    mapping: PayloadMapping = None
    start: StartAt | None = Field(None, description="where a new consumer starts (default: the stream's first)")
    ack_wait: float = Field(
        300.0, gt=0, description="seconds the server waits for an ack before redelivering (see the README)"
    )
    max_ack_pending: int = Field(20_000, ge=1, description="messages read and not yet acked, at most")
    connect_timeout: float = Field(2.0, gt=0, description="seconds for one connection attempt")
    fresh_consumer: bool = Field(
        False,
        description="each open creates a consumer of its own (CONSUMER_<random>, starting after the checkpoint) "
        "and deletes the earlier ones: no consumer state is ever reused (what a cluster's partitions use)",
    )
