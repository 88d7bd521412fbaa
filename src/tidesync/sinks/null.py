"""A sink that accepts every event and keeps nothing (benchmarks, dry runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tidesync.event import ChangeEvent
from tidesync.protocols import Context


class NullSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["discard", "null"] = "discard"


class NullSink:
    """Discards events; counts them so a benchmark can check that everything arrived."""

    def __init__(self, config: NullSinkConfig | None = None) -> None:
        self.config = config or NullSinkConfig()
        self.events = 0
        self.batches = 0

    async def open(self, ctx: Context) -> None:
        return None

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        self.events += len(events)
        self.batches += 1

    async def close(self) -> None:
        return None
