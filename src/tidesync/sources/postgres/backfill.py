"""On-demand snapshot of one table while streaming goes on, with watermarks (Netflix's DBLog).

For each chunk, in key order:

1. write a *low* watermark into the WAL (``pg_logical_emit_message``, transactional);
2. select the chunk (the next ``chunk_size`` rows after the last key, read committed);
3. write a *high* watermark.

The stream delivers both watermarks in commit order. Every change to the
table between them is delivered as usual, and its key is removed from the
chunk: the stream's version is at least as new as the selected one. When the
high watermark arrives, the remaining rows are emitted as ``snapshot`` events
right there, as events of the high watermark's transaction, so every later
change of those keys follows them. A truncate between the watermarks drops
the whole chunk. No row is missed and no stale row overwrites a newer change,
whether or not the keys grow monotonically.

Progress (the last key whose chunk the engine committed) is kept in the state
store, so a restarted source resumes the backfill from there. After a lost
connection the chunk in flight is selected again with new watermarks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tidesync.event import Position
from tidesync.sources.postgres.assembler import Assembler
from tidesync.sources.postgres.catalog import TableShape
from tidesync.sources.postgres.pgoutput import Message
from tidesync.sources.postgres.relation import RelationInfo
from tidesync.sources.postgres.snapshot import paging_key, select_chunk

log = logging.getLogger("tidesync.sources.postgres")


@dataclass(slots=True)
class _Chunk:
    id: str
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    last_key: list[str] | None = None
    done: bool = False
    low_seen: bool = False
    retry: bool = False
    emitted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Progress:
    commit_lsn: int  # the high watermark's transaction
    entity: str
    last_key: list[str] | None
    done: bool


class Backfill:
    """One table's on-demand snapshot; ``run`` drives it, the assembler calls ``on_watermark``."""

    def __init__(
        self,
        slot: str,
        shape: TableShape,
        info: RelationInfo,
        *,
        chunk_size: int,
        connect: Callable[[], Awaitable[Any]],
        emit: Callable[[str], Awaitable[None]],
        last_key: list[str] | None = None,
        on_chunk: Callable[[int, bool], None] | None = None,
    ) -> None:
        """``on_chunk``: told (rows emitted, last chunk) after each chunk's rows are emitted (a progress display)."""
        self.slot = slot
        self.shape = shape
        self.info = info
        self.entity = info.entity
        self.chunk_size = chunk_size
        self._connect = connect
        self._emit = emit
        self.last_key = last_key
        self.order = paging_key(info, shape)
        self.id = uuid.uuid4().hex[:12]
        self.pending: _Chunk | None = None
        self.progress: list[Progress] = []
        self.rows_emitted = 0
        self.finished = asyncio.Event()
        self.on_chunk = on_chunk

    async def run(self) -> None:
        conn = await self._connect()
        try:
            n = 0
            while True:
                chunk = _Chunk(f"{self.id}.{n}")
                n += 1
                before = self.rows_emitted
                self.pending = chunk
                await self._emit(f"{self.slot}:{chunk.id}:low")
                rows, last_key = await select_chunk(
                    conn, self.shape, self.info, self.order, self.last_key, self.chunk_size
                )
                key_of = self.info.key_of
                chunk.rows = [(key_of(r), r) for r in rows]
                chunk.last_key = last_key if last_key is not None else self.last_key
                chunk.done = len(rows) < self.chunk_size
                await self._emit(f"{self.slot}:{chunk.id}:high")
                await chunk.emitted.wait()
                self.pending = None
                if chunk.retry:
                    continue
                self.last_key = chunk.last_key
                if self.on_chunk is not None:
                    self.on_chunk(self.rows_emitted - before, chunk.done)
                if chunk.done:
                    break
        finally:
            self.pending = None
            await conn.close()
            self.finished.set()

    def abandon(self) -> None:
        """The stream restarts: the chunk in flight is selected again with new watermarks."""
        chunk = self.pending
        if chunk is not None:
            chunk.retry = True
            chunk.emitted.set()

    def on_watermark(self, msg: Message, asm: Assembler) -> bool:
        """Handle a watermark from the stream; True when it was one of ours."""
        try:
            slot, chunk_id, kind = msg.content.decode().rsplit(":", 2)
        except (UnicodeDecodeError, ValueError):
            return False
        chunk = self.pending
        if slot != self.slot or chunk is None or chunk.id != chunk_id:
            return False
        if kind == "low":
            chunk.low_seen = True
            asm.open_watch(self.entity)
        elif kind == "high":
            if not chunk.low_seen or chunk.rows is None:
                asm.close_watch()
                chunk.retry = True
            else:
                stale = asm.close_watch()
                rows = [] if stale is None else [(k, r) for k, r in chunk.rows if k not in stale]
                asm.emit_rows(self.entity, rows)
                self.rows_emitted += len(rows)
                self.progress.append(Progress(asm.lsn, self.entity, chunk.last_key, chunk.done))
            chunk.emitted.set()
        return True

    def committed(self, position: Position) -> Progress | None:
        """The newest progress covered by a committed position (whole high-watermark transactions only)."""
        latest = None
        while self.progress and position[0] > self.progress[0].commit_lsn:
            latest = self.progress.pop(0)
        return latest
