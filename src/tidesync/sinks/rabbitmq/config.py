"""Configuration of the RabbitMQ sink.

::

    sink:
      type: rabbitmq
      url: "amqp://guest:guest@127.0.0.1/"
      exchange: cdc
      exchange_type: topic             # declared (durable) if missing
      routing_key: "{entity}"          # may use {entity} and {partition}
      partitions: 8                    # {partition} = stable hash of the key mod 8
      format: tidesync
      mandatory: true                  # an unroutable message is an error (no queue bound)
      max_in_flight: 1000
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.sinks.rabbitmq.routing import check_template

AMQP_URL = r"^amqps?://"


class RabbitMQSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["rabbitmq"] = "rabbitmq"
    url: str = Field(
        "amqp://guest:guest@127.0.0.1/", pattern=AMQP_URL, description="the broker (amqp:// or amqps://, with vhost)"
    )
    exchange: str = Field(min_length=1, max_length=255, description="the exchange the events are published to")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field(
        "topic", description="type of the exchange when the sink declares it"
    )
    declare: bool = Field(True, description="declare the exchange (durable) if missing; off: it must exist")
    routing_key: str = Field("{entity}", description="routing key template: {entity}, {partition}")
    partitions: int | None = Field(None, ge=1, le=65536, description="number of partitions for {partition}")
    format: Literal["tidesync", "debezium", "cloudevents"] = Field("tidesync", description="payload format")
    mandatory: bool = Field(
        True, description="an event no queue is bound for is an error that blocks the pipeline (off: dropped)"
    )
    max_in_flight: int = Field(1000, ge=1, le=100_000, description="publishes awaiting their confirm at once")
    timeout: float = Field(10.0, gt=0, description="seconds to wait for one publish's confirm")
    connect_timeout: float = Field(5.0, gt=0, description="seconds for one connection attempt")
    heartbeat: int = Field(10, ge=0, le=600, description="seconds between AMQP heartbeats (a dead peer is seen)")

    @model_validator(mode="after")
    def _routing_key(self) -> Self:
        check_template(self.routing_key, self.partitions)
        return self
