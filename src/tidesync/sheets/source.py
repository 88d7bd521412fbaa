"""The file spreadsheet source (``type: csv`` / ``type: xlsx``): a watched file, diffed by key.

Each time the file changes and settles (:mod:`.watch`), it is read whole
(:mod:`.read`), typed (:mod:`.table`) and diffed (:mod:`.diff`) against the
snapshot of what this source last emitted: inserts, updates with exact
``changed``, deletes. A file that cannot be read as a complete table (half
written, mid-replace, not a workbook yet) changes nothing; it is read again
when it changes next, or after ``poll_interval`` at the latest.

Positions are ``(epoch, seq, digest)``: ``epoch`` grows by one at every
``open`` (kept in the state store), ``seq`` counts events within it, and
``digest`` names the file content the event was diffed from (for people; two
positions never differ only in it). Positions therefore grow across restarts,
and a position handed out before a crash is never handed out again for
another change.

The snapshot is the source's shadow rows (scope: the pipeline), one per key.
Every batch carries its shadow changes in ``batch.state``, committed by the
engine in the same transaction as its checkpoint. ``open`` loads the committed
ones, so a restart diffs the file against what was last *handed on*, not
from scratch: changes emitted but not checkpointed before a crash are found
again, nothing else is emitted twice.

Rejected rows (a cell that does not fit its declared type, an empty or a
duplicate key) go out in ``batch.rejected`` with the cell's address
(``Customers!D17: 'abc' is not a number``); the other rows flow. The row's
last good state stays in the snapshot (it is not deleted), and the rejection
is remembered by the row's fingerprint (kv ``sheet_rejects``), so the same
bad row is reported once, not at every save; once fixed, it is diffed again.

The file disappearing (deleted, or between the two steps of a replace) is not
"every row deleted": nothing is emitted until a file is there again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidesync.event import DELETE, INSERT, UPDATE, Batch, ChangeEvent, Key, Position, Row, json_dumps
from tidesync.protocols import Context
from tidesync.sheets.columns import entity_schema
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.diff import Change, apply, diff
from tidesync.sheets.read import Unreadable, cyclic_gc_paused, parse, read_bytes
from tidesync.sheets.table import Records, Reject, Table, Typer
from tidesync.sheets.watch import FileWatch, Signature, signature
from tidesync.state.store import ShadowRow, StateChanges

log = logging.getLogger("tidesync.sheets.source")
EPOCH_NS = "sheet_epoch"
REJECT_NS = "sheet_rejects"


@dataclass(frozen=True, slots=True)
class _Pending:
    change: Change | None
    reject: Reject | None
    committed_at: float
    digest: str
    memo_key: str = ""  # a reject's kv key, stored with the batch that reports it


class SheetSource:
    """Reads one sheet of one file; see the module docstring for the rules."""

    def __init__(self, config: SheetSourceConfig) -> None:
        self.config = config
        self.path = Path(config.path)
        self.entity = config.entity or self.path.stem
        self._ctx: Context | None = None
        self._watch: FileWatch | None = None
        self._typer = Typer(tuple(config.key) if config.key else None, config.columns)
        self._scope = ""
        self._epoch = 0
        self._seq = 0
        self._snapshot: dict[Key, Row] = {}
        self._memo: dict[str, str] = {}  # reject kv key -> fingerprint of the rejected row
        self._memo_delete: list[str] = []
        self._queue: deque[_Pending] = deque()
        self._read_sig: Signature | None = None
        self._retry_at = float("inf")
        self._failed: tuple[Signature | None, str] | None = None
        self._header: tuple[str, ...] = ()
        self.reads = 0  # whole-file reads, for tests and metrics
        self.unreadable = 0  # reads that found no complete table (half-written, mid-replace)

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        self._scope = ctx.pipeline
        stored = await ctx.state.kv_get(EPOCH_NS, self._scope) or 0
        self._epoch = max(int(stored), int(after[0]) if after else 0) + 1
        await ctx.state.kv_put(EPOCH_NS, self._scope, self._epoch)
        self._seq = 0
        self._snapshot = {s.key: s.row for s in await ctx.state.shadow_scan(self._scope, self.entity)}
        self._memo = {
            k: str(v) for k, v in (await ctx.state.kv_scan(REJECT_NS, f"{self._scope}:{self.entity}:")).items()
        }
        self._memo_delete = []
        self._queue.clear()
        self._read_sig, self._retry_at, self._failed = None, float("inf"), None
        if self._watch is None:
            self._watch = FileWatch(
                self.path,
                poll_interval=self.config.poll_interval,
                settle=self.config.settle,
                notify=self.config.watch == "auto",
                clock=ctx.clock,
            )
            self._watch.start()

    @property
    def notifying(self) -> bool:
        """True once file-system notifications arrive for the file (otherwise only the ``poll_interval`` stat)."""
        return self._watch is not None and self._watch.notifying

    async def commit(self, position: Position) -> None:
        return None  # the snapshot moves with the engine's checkpoint (batch.state); nothing upstream to release

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.close()

    # --- reading -------------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        assert self._ctx is not None and self._watch is not None
        clock = self._ctx.clock
        deadline = clock.monotonic() + max_wait
        while not self._queue and not self._memo_delete:
            if await self._poll():
                continue
            now = clock.monotonic()
            if now >= deadline:
                break
            await self._watch.wait(deadline - now)
        return self._emit(max_events)

    async def _poll(self) -> bool:
        """Read the file if it changed since the last read; True when that queued something to emit."""
        assert self._ctx is not None and self._watch is not None
        sig = signature(self.path)
        if sig == self._read_sig and self._ctx.clock.monotonic() < self._retry_at:
            return False
        sig = await self._watch.settled(sig)
        if sig is None:
            self._read_sig = None  # missing (deleted, or mid-replace): no change until a file is there
            return False
        snapshot = self._snapshot
        try:
            table, records, changes = await asyncio.to_thread(self._load, snapshot)
        except Unreadable as exc:
            self._unreadable(sig, str(exc))
            return False
        if signature(self.path) != sig:
            return True  # it changed while being read: read it again once it settles
        if self._snapshot is not snapshot:  # this very content was handed over meanwhile (observe)
            changes = diff(self._snapshot, records.rows, keep={r.key for r in records.rejects})
        self.reads += 1
        self._read_sig, self._retry_at, self._failed = sig, float("inf"), None
        self._publish(table, records)
        self._queue_changes(records, changes, sig[2] / 1e9, table.digest)
        return bool(self._queue or self._memo_delete)

    def observe(self, table: Table, records: Records, mtime: float) -> None:
        """A version of the file that a writer in this process saved (a sync's sheet endpoint), as read back.

        It is diffed now, like a read of the file: the source may not read the
        file before it changes again, and a change made over that version (a row
        the sync added, deleted at once by a person) would then not be seen.
        """
        if self._ctx is None or self._watch is None:
            return  # not open: the next open diffs the file against the committed snapshot anyway
        changes = diff(self._snapshot, records.rows, keep={r.key for r in records.rejects})
        self._publish(table, records)
        self._queue_changes(records, changes, mtime, table.digest)

    def _load(self, snapshot: dict[Key, Row]) -> tuple[Table, Records, list[Change]]:
        """Parse, type and diff, in a worker thread (a large sheet takes a second or more)."""
        with cyclic_gc_paused():
            table, records = self._parse_and_type()
            return table, records, diff(snapshot, records.rows, keep={r.key for r in records.rejects})

    def _parse_and_type(self) -> tuple[Table, Records]:
        table = parse(
            read_bytes(self.path),
            self.config.type,
            name=self.path.stem,
            sheet=self.config.sheet,
            header_row=self.config.header_row,
            delimiter=self.config.delimiter,
            encoding=self.config.encoding,
        )
        try:
            return table, self._typer.records(table)
        except ValueError as exc:  # a configured column missing from the header
            raise Unreadable(str(exc)) from None

    def _unreadable(self, sig: Signature, why: str) -> None:
        assert self._ctx is not None
        self.unreadable += 1
        if self._failed != (sig, why):
            log.warning("%s: not read (%s); trying again when it changes", self.path, why)
        self._failed = (sig, why)
        self._read_sig = sig
        self._retry_at = self._ctx.clock.monotonic() + max(1.0, self.config.poll_interval)

    def _publish(self, table: Table, records: Records) -> None:
        assert self._ctx is not None
        if table.header != self._header:
            self._header = table.header
            shape = entity_schema(self.entity, table, records, self.config.columns, self.config.key or ())
            self._ctx.schemas.put(shape)

    def _queue_changes(self, records: Records, changes: list[Change], committed_at: float, digest: str) -> None:
        self._snapshot = apply(self._snapshot, changes)
        pending = [_Pending(c, None, committed_at, digest) for c in changes]
        prefix = f"{self._scope}:{self.entity}:"
        seen = set()
        for r in records.rejects:
            memo_key = prefix + json_dumps(list(r.key)).decode()
            seen.add(memo_key)
            if self._memo.get(memo_key) != r.fingerprint:
                self._memo[memo_key] = r.fingerprint
                pending.append(_Pending(None, r, committed_at, digest, memo_key))
        if len(pending) > len(changes):  # rejects among the changes: everything in sheet order, deletes last
            order = {k: i for i, k in enumerate(records.rows)}
            end = len(order)

            def place(p: _Pending) -> float:
                if p.reject is not None:
                    return p.reject.after - 0.5
                assert p.change is not None
                return order.get(p.change.key, end) if p.change.op != DELETE else end

            pending.sort(key=place)
        self._queue.extend(pending)
        for memo_key in [k for k in self._memo if k not in seen]:
            del self._memo[memo_key]  # fixed, or gone from the sheet
            self._memo_delete.append(memo_key)

    def _next(self, digest: str) -> Position:
        self._seq += 1
        return (self._epoch, self._seq, digest[:16])

    def _emit(self, max_events: int) -> Batch[StateChanges]:
        assert self._ctx is not None
        events: list[ChangeEvent] = []
        rejected: list[tuple[ChangeEvent, str]] = []
        puts: list[ShadowRow] = []
        deletes: list[tuple[str, str, Key]] = []
        memo: dict[tuple[str, str], Any] = {}
        last: Position | None = None
        while self._queue and len(events) + len(rejected) < max_events:
            p = self._queue.popleft()
            last = self._next(p.digest)
            if p.reject is not None:
                r = p.reject
                before = self._snapshot.get(r.key)
                op = UPDATE if before is not None else INSERT
                placeholder = ChangeEvent(
                    self.entity, r.key, op, before=before, after=r.cells, position=last, committed_at=p.committed_at
                )
                rejected.append((placeholder, r.reason))
                memo[(REJECT_NS, p.memo_key)] = r.fingerprint
                continue
            c = p.change
            assert c is not None
            events.append(
                ChangeEvent(
                    self.entity,
                    c.key,
                    c.op,
                    before=c.before,
                    after=c.after,
                    changed=c.changed,
                    position=last,
                    committed_at=p.committed_at,
                )
            )
            if c.op == DELETE:
                deletes.append((self._scope, self.entity, c.key))
            else:
                assert c.after is not None
                puts.append(ShadowRow(self._scope, self.entity, c.key, c.after, last, p.committed_at))
        state = StateChanges(shadow_put=puts, shadow_delete=deletes, kv_put=memo)
        if not self._queue and self._memo_delete:
            state.kv_delete = [(REJECT_NS, k) for k in self._memo_delete]
            self._memo_delete = []
            if last is None:
                last = self._next("")  # a checkpoint of its own, to carry the kv changes
        if last is None:
            return Batch([], None, read_at=self._ctx.clock.time())
        return Batch(events, last, read_at=self._ctx.clock.time(), state=state, rejected=rejected)
