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

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sinks.rabbitmq.routing import check_template
from tidesync.sinks.templates import Partitions, template_validator

AMQP_URL = r"^amqps?://"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"

# The connection keys the rabbitmq sink and source share.
AmqpUrl = Annotated[str, Field(pattern=AMQP_URL, description="the broker (amqp:// or amqps://, with vhost)")]
Heartbeat = Annotated[int, Field(ge=0, le=600, description="seconds between AMQP heartbeats (a dead peer is seen)")]


class RabbitMQSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["rabbitmq"] = "rabbitmq"
    url: AmqpUrl = DEFAULT_URL
    exchange: str = Field(min_length=1, max_length=255, description="the exchange the events are published to")
    exchange_type: Literal["topic", "direct", "fanout", "headers"] = Field(
        "topic", description="type of the exchange when the sink declares it"
    )
    declare: bool = Field(True, description="declare the exchange (durable) if missing; off: it must exist")
    routing_key: str = Field("{entity}", description="routing key template: {entity}, {partition}")
    partitions: Partitions = None
    format: Literal["tidesync", "debezium", "cloudevents"] = Field("tidesync", description="payload format")
    mandatory: bool = Field(
        True, description="an event no queue is bound for is an error that blocks the pipeline (off: dropped)"
    )
    max_in_flight: int = Field(1000, ge=1, le=100_000, description="publishes awaiting their confirm at once")
    timeout: float = Field(10.0, gt=0, description="seconds to wait for one publish's confirm")
    connect_timeout: float = Field(5.0, gt=0, description="seconds for one connection attempt")
    heartbeat: Heartbeat = 10

    _routing_key = template_validator("routing_key", check_template)
