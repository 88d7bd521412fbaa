"""Configuration of the RabbitMQ source.

::

    source:
      type: rabbitmq
      url: "amqp://guest:guest@127.0.0.1/"
      queue: cdc-apply
      bind: {exchange: cdc, routing_keys: ["#"]}   # optional: declare the durable queue and bind it
      queue_type: classic                          # or quorum (for a declared queue)
      prefetch: 1000
      format: tidesync
      dedupe_window: 100000                        # message ids remembered to drop a redelivery
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sinks.rabbitmq.config import DEFAULT_URL, AmqpUrl, Heartbeat
from tidesync.sources.payload import PayloadFormat, PayloadMapping


class Bind(BaseModel):
    """Declare the queue (durable) and bind it to an exchange (declared durable if missing)."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(min_length=1, max_length=255, description="the exchange to bind the queue to")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field(
        "topic", description="type of the exchange when the source declares it"
    )
    routing_keys: list[str] = Field(
        default_factory=lambda: ["#"], min_length=1, description="binding keys (topic patterns: * one word, # any)"
    )


class RabbitMQSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["rabbitmq"] = "rabbitmq"
    url: AmqpUrl = DEFAULT_URL
    queue: str = Field(min_length=1, max_length=255, description="the queue to read (one reading process per queue)")
    bind: Bind | None = Field(None, description="declare the queue and bind it (default: the queue must exist)")
    queue_type: Literal["classic", "quorum"] = Field("classic", description="type of a queue the source declares")
    prefetch: int = Field(1000, ge=1, le=65535, description="messages delivered and not yet acked, at most")
    format: PayloadFormat = Field("tidesync", description="payload format")
    mapping: PayloadMapping = None
    dedupe_window: int = Field(
        100_000, ge=0, description="message ids kept in the state store to drop a message applied before (0: off)"
    )
    connect_timeout: float = Field(5.0, gt=0, description="seconds for one connection attempt")
    heartbeat: Heartbeat = 10
