"""Configuration of the MQTT source.

::

    source:
      type: mqtt
      url: mqtt://127.0.0.1:1883
      topics: ["cdc/#"]
      qos: 1
      client_id: apply-1            # default: tidesync-<pipeline>-<name>; one process per client id
      format: tidesync
      session_expiry: 604800        # seconds the broker keeps the session (and queues) while we are away
      dedupe_window: 3600           # seconds a message id is remembered after its checkpoint
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sinks.mqtt.config import DEFAULT_URL, Keepalive, MqttUrl
from tidesync.sources.payload import PayloadFormat, PayloadMapping


class MqttSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mqtt"] = "mqtt"
    url: MqttUrl = DEFAULT_URL
    topics: list[str] = Field(
        default_factory=lambda: ["cdc/#"], min_length=1, description="topic filters to subscribe to (+ and # allowed)"
    )
    qos: Literal[0, 1] = Field(1, description="subscription QoS: 1 is needed for the broker to keep messages for us")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="the persistent session's client id (default tidesync-<pipeline>-<source name>); one process each",
    )
    format: PayloadFormat = Field("tidesync", description="payload format")
    mapping: PayloadMapping = None
    session_expiry: int = Field(
        604_800, ge=1, le=4_294_967_295, description="seconds the broker keeps the session while disconnected"
    )
    dedupe_window: float = Field(
        3600.0, ge=0, description="seconds a handled message's tidesync-id is remembered to drop a re-publish"
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="QoS 1 messages the broker may send before our acks (MQTT 5)"
    )
    timeout: float = Field(5.0, gt=0, description="seconds for a subscribe or disconnect to be answered")
    connect_timeout: float = Field(2.0, gt=0, description="seconds for one connection attempt")
    keepalive: Keepalive = 10
