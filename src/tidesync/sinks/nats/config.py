"""Configuration of the NATS JetStream sink.

::

    sink:
      type: nats
      url: nats://127.0.0.1:4222
      stream: CDC
      subject: "cdc.{entity}"          # may use {entity} and {partition}
      partitions: 8                     # {partition} = stable hash of the key mod 8
      format: tidesync
      create_stream: true               # create the stream (subjects from the template) if missing
      duplicate_window: 120             # seconds: a re-publish within it is dropped by Nats-Msg-Id
      max_in_flight: 1000
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.sinks.nats.subjects import check_template, stream_subjects
from tidesync.sinks.templates import Partitions

NATS_URL = r"^(nats|tls)://"
NAME = r"^[A-Za-z0-9_-]+$"


class NatsSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["nats"] = "nats"
    url: str = Field("nats://127.0.0.1:4222", pattern=NATS_URL, description="the NATS server (nats:// or tls://)")
    stream: str = Field(pattern=NAME, description="the JetStream stream the events are published to")
    subject: str = Field("cdc.{entity}", description="subject template: {entity}, {partition}")
    partitions: Partitions = None
    format: Literal["tidesync", "debezium", "cloudevents"] = Field("tidesync", description="payload format")
    create_stream: bool = Field(True, description="create the stream if it is missing")
    stream_subjects: list[str] | None = Field(
        None, min_length=1, description="subjects of a created stream (default: from the subject template)"
    )
    storage: Literal["file", "memory"] = Field("file", description="storage of a created stream")
    replicas: int = Field(1, ge=1, le=5, description="copies a created stream keeps (on a NATS cluster)")
    schemas: bool = Field(
        False,
        description="publish each entity's schema (columns, types, key) to every partition's subject before its "
        "first event and after each change (header Tidesync-Schema), so a `nats` source hands it to its sinks",
    )
    duplicate_window: float = Field(
        120.0, gt=0, description="seconds a created stream remembers Nats-Msg-Id (de-duplication)"
    )
    max_in_flight: int = Field(1000, ge=1, le=100_000, description="publishes awaiting their ack at once")
    timeout: float = Field(5.0, gt=0, description="seconds to wait for one publish's ack")
    connect_timeout: float = Field(2.0, gt=0, description="seconds for one connection attempt")

    @model_validator(mode="after")
    def _subject(self) -> Self:
        check_template(self.subject, self.partitions)
        if self.create_stream and self.stream_subjects is None:
            stream_subjects(self.subject)  # raises when it cannot be derived
        return self

    def created_subjects(self) -> list[str]:
        return self.stream_subjects or stream_subjects(self.subject)
