"""What a publishing sink (mqtt, nats, rabbitmq) sends for an event: the body in its format, and the event's id.

The body's CloudEvents ``id``/``source`` and the idempotency id (the one the
webhook sink sends too) name the pipeline and the sink, which a sink learns
only at ``open``: until :meth:`Payloads.name` is called they name pipeline
``""`` and sink ``"sink"``.
"""

from __future__ import annotations

from collections.abc import Callable

from tidesync import formats
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.webhook.envelope import idempotency_id


class Payloads:
    """The encoder of one sink's events, named for its pipeline and sink."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.content_type = formats.content_type(fmt)  # a ConfigError here fails the pipeline at start
        self.pipeline = ""
        self.sink = "sink"
        self.encode: Callable[[ChangeEvent], bytes] = formats.encoder(fmt, pipeline="", sink="sink")

    def name(self, ctx: Context) -> None:
        """Name the pipeline and the sink (at ``open``)."""
        self.pipeline, self.sink = ctx.pipeline, ctx.name
        self.encode = formats.encoder(self.format, pipeline=ctx.pipeline, sink=ctx.name)

    def id(self, event: ChangeEvent) -> str:
        """The event's idempotency id: the same for every delivery of it by this pipeline and sink."""
        return idempotency_id(self.pipeline, self.sink, event)
