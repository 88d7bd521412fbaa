"""The source's on-demand snapshots: a queue of tables, one :class:`Backfill` at a time, progress in the state store.

Progress lives under ``<pipeline>/<source>/backfill`` in the state store: per
entity, the last key whose chunk the engine committed. A source that opens
with entries there resumes them; an entry is removed when its last chunk is
committed. Tables without a key are refused (their destinations append).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tidesync.errors import SourceError, SourceTransientError
from tidesync.event import Position
from tidesync.progress import Progress
from tidesync.sources.postgres.assembler import Assembler
from tidesync.sources.postgres.backfill import Backfill
from tidesync.sources.postgres.catalog import TableShape
from tidesync.sources.postgres.pgoutput import Message
from tidesync.sources.postgres.relation import RelationInfo
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.sources.postgres")


class Backfills:
    def __init__(
        self,
        *,
        slot: str,
        state: StateStore,
        namespace: str,
        key: str,
        chunk_size: int,
        connect: Callable[[], Awaitable[Any]],
        emit: Callable[[str], Awaitable[None]],
        progress: Progress | None = None,
    ) -> None:
        """``progress``: where each table's rows read show (see :mod:`tidesync.progress`); closed by ``close``."""
        self.slot = slot
        self.state = state
        self.namespace = namespace
        self.key = key
        self.chunk_size = chunk_size
        self._connect = connect
        self._emit = emit
        self._queue: list[tuple[TableShape, RelationInfo, list[str] | None]] = []
        self.current: Backfill | None = None
        self.failure: SourceError | None = None
        self._task: asyncio.Task[None] | None = None
        self.progress = progress

    @property
    def running(self) -> bool:
        return bool(self._queue) or (self.current is not None and not self.current.finished.is_set())

    async def saved(self) -> dict[str, Any]:
        """Unfinished backfills in the state store: entity -> {"last_key": ...}."""
        raw = await self.state.kv_get(self.namespace, self.key)
        return dict(raw) if isinstance(raw, dict) else {}

    async def add(
        self, shape: TableShape, info: RelationInfo, last_key: list[str] | None = None, *, resumed: bool = False
    ) -> None:
        """Queue a backfill of ``info``'s table after ``last_key`` (None: from the start).

        Raises SourceError for a table without a key: its destination appends
        rows, so reading it again would double every row.
        """
        if not resumed and not info.schema.primary_key:
            raise SourceError(
                f"{info.entity} has no primary key (nor a replica identity index): an on-demand snapshot would "
                "append every row to the destination again. Add a primary key, or re-create the destination "
                "table and reset the pipeline to take a new initial snapshot."
            )
        if not resumed:
            await self._save(info.entity, None, done=False)
        self._queue.append((shape, info, last_key))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def on_watermark(self, msg: Message, asm: Assembler) -> None:
        if self.current is not None:
            self.current.on_watermark(msg, asm)

    def abandon(self) -> None:
        if self.current is not None:
            self.current.abandon()

    async def committed(self, position: Position) -> None:
        if self.current is None:
            return
        done = self.current.committed(position)
        if done is not None:
            await self._save(done.entity, done.last_key, done.done)

    async def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        while self._queue:
            shape, info, last_key = self._queue.pop(0)
            bf = Backfill(
                self.slot,
                shape,
                info,
                chunk_size=self.chunk_size,
                connect=self._connect,
                emit=self._emit,
                last_key=last_key,
                on_chunk=self._shown(info.entity),
            )
            self.current = bf
            try:
                await bf.run()
            except SourceError as exc:
                self.failure = exc
                return
            except Exception as exc:  # reported by the source's next read
                self.failure = SourceTransientError(f"backfill of {info.entity} failed: {exc}")
                return
            log.info("backfill of %s read %d rows", info.entity, bf.rows_emitted)

    def _shown(self, entity: str) -> Callable[[int, bool], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda rows, done: progress.advance(entity, rows, done=done)

    async def _save(self, entity: str, last_key: list[str] | None, done: bool) -> None:
        raw = await self.saved()
        if done:
            raw.pop(entity, None)
        else:
            raw[entity] = {"last_key": last_key}
        await self.state.kv_put(self.namespace, self.key, raw)
