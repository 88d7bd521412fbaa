"""Configuration of the MQTT sink.

::

    sink:
      type: mqtt
      url: mqtt://127.0.0.1:1883          # mqtts:// for TLS; user:password@ in the URL if the broker asks
      topic: "cdc/{entity}"               # may use {entity} and {partition}
      partitions: 8                       # {partition} = stable hash of the key mod 8
      qos: 1
      retain: false
      format: tidesync
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sinks.mqtt.topics import check_template
from tidesync.sinks.templates import Partitions, template_validator

MQTT_URL = r"^mqtts?://[^/?#]+/?$"
DEFAULT_URL = "mqtt://127.0.0.1:1883"

# The connection keys the mqtt sink and source share.
MqttUrl = Annotated[
    str, Field(pattern=MQTT_URL, description="the broker (mqtt:// or mqtts://; user:password@ optional)")
]
Keepalive = Annotated[
    int, Field(ge=2, le=65535, description="seconds between keepalive pings (a dead link is noticed)")
]


class MqttSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = "mqtt"
    url: MqttUrl = DEFAULT_URL
    topic: str = Field("cdc/{entity}", description="topic template: {entity}, {partition}")
    partitions: Partitions = None
    qos: Literal[0, 1] = Field(
        1, description="1: each publish awaits the broker's PUBACK (at least once); 0: fire and forget (may lose)"
    )
    retain: bool = Field(False, description="publish retained messages (the broker keeps the last one per topic)")
    format: Literal["tidesync", "debezium", "cloudevents"] = Field("tidesync", description="payload format")
    max_in_flight: int = Field(1000, ge=1, le=65535, description="publishes awaiting their PUBACK at once")
    timeout: float = Field(5.0, gt=0, description="seconds to wait for one publish's PUBACK")
    connect_timeout: float = Field(2.0, gt=0, description="seconds for one connection attempt")
    keepalive: Keepalive = 10

    _topic = template_validator("topic", check_template)
