"""The payload keys of the sources that read broker messages (mqtt, nats, rabbitmq, redis).

Each message's body is decoded by :func:`tidesync.formats.decoder` with the
source's ``format`` and ``mapping``; the two keys mean the same in every one
of those sources.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

PayloadFormat = Literal["tidesync", "debezium", "cloudevents", "json"]

PayloadMapping = Annotated[
    dict[str, Any] | None,
    Field(
        description="format json: the generic webhook mapping (entity, key, op, ...); format debezium: "
        "{key: [columns]} for records written by Debezium itself (their key is not in the value)",
    ),
]
