"""Field-level updates from Postgres CDC: each row's last values, kept so that ``changed`` is exact.

pgoutput sends every column of an updated row (except unchanged TOASTed
values, sent as 'u') and, without REPLICA IDENTITY FULL, no old row. So an
update that set one column looks like one that set them all, and a sink that
wrote them all would overwrite a concurrent edit of another column at the
destination. The keeper remembers every captured row's last values and narrows
each update's ``changed`` to the columns that differ from them.

Modes (the source's ``shadow`` setting):

- ``fingerprint`` (the default): values are kept as they are when short, and
  as a 64-bit digest (xxh3) when they are strings or bytes over 64
  characters, so the store stays small for wide text or JSON columns;
- ``rows``: values are kept whole and exact, and an update's unchanged
  TOASTed columns are filled from them (consumers that need whole rows, such
  as webhooks and brokers, get the real value, never a placeholder; a filled
  column is not in ``changed``);
- ``off``: no shadow; updates carry every column ("whole-row updates").

A row never seen (``snapshot: never``, or shadows started over) has no
values: its first update lists every column present, and from then on it is
exact.

Crash safety. The values live in memory (a bounded cache) and in an LMDB
store (:mod:`.shadow_store`) written when a batch is produced, before the
engine can commit its position: the store runs *ahead* of the checkpoint,
never behind. After a crash the events since the checkpoint are produced
again, and their rows' values may already be newer than the events. So an
entry keeps *versions*, ``(position, values)``: an event at position ``p`` is
compared with the newest version before ``p``; versions at or after ``p``
(what a previous run produced from this event on) are dropped, the replay
writes them again. Versions older than the newest one at or before the
position the engine last confirmed are dropped too: no replay can need them.
So a replayed update is neither lost nor reported as a no-op. (One exception,
whole-row rather than exact: an update replayed across a delete and re-insert
of the same key within the unconfirmed window.)

A TRUNCATE drops the table's entries: a replay that crosses it sees its
earlier updates as whole-row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import xxhash

from tidesync.event import (
    DELETE,
    INSERT,
    TRUNCATE,
    UPDATE,
    ChangeEvent,
    Key,
    Position,
    Row,
    pack_value,
    unpack_value,
)
from tidesync.sources.postgres.shadow_store import ShadowStore

log = logging.getLogger("tidesync.sources.postgres")

Mode = Literal["fingerprint", "rows"]
# (position, the row's values then (None: deleted), whether they were read back from the store: then they
# are in the store's form, see _normal)
Version = tuple[Position, Row | None, bool]
Entry = list[Version]

LONG: Final = 64  # strings and bytes longer than this are kept as a digest (fingerprint mode)
SYNC_EVERY: Final = 1.0  # seconds between flushes of the store to disk (see shadow_store)
_MISSING: Final = object()


DIGEST: Final = 20  # msgpack extension code of a digest: never equal to a value a column holds
WIDE_INT: Final = 21  # msgpack extension code of an integer past 64 bits (decimal digits)
ROW_LIMIT: Final = 512  # an encoded row longer than this is stored with its long values as digests

# msgspec's own forms (datetimes as timestamps, Decimal and UUID as strings, anything else through str):
# fast, and comparing two values in that form is as good as comparing them, but for Decimal scale.
_ENC = msgspec.msgpack.Encoder(enc_hook=str)


def _encode(value: Any) -> bytes:
    try:
        return _ENC.encode(value)
    except OverflowError:  # an integer past 64 bits (numeric keys and values): as an extension, exactly
        return _ENC.encode(_wide(value))


def _wide(value: Any) -> Any:
    t = type(value)
    if t is int and not -(2**63) <= value < 2**64:
        return msgspec.msgpack.Ext(WIDE_INT, str(value).encode())
    if t is dict:
        return {k: _wide(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_wide(v) for v in value]
    return value


def _digest(value: Any) -> Any:
    t = type(value)
    if t is str and len(value) > LONG:
        return msgspec.msgpack.Ext(DIGEST, xxhash.xxh3_64_digest(value.encode()))
    if (t is bytes or t is bytearray or t is memoryview) and len(value) > LONG:
        return msgspec.msgpack.Ext(DIGEST, xxhash.xxh3_64_digest(value))
    return value


def _short(row: Row) -> Row:
    """A row with its long values as digests when it is long encoded (fingerprint mode)."""
    if len(_encode(row)) <= ROW_LIMIT:
        return row
    return {k: _digest(v) for k, v in row.items()}


def _normal(row: Row, mode: Mode) -> Row:
    """A row as the store gives it back (to compare with a version read from it)."""
    if mode == "rows":
        return row
    return msgspec.msgpack.decode(_encode(_short(row)))  # type: ignore[no-any-return]


def _flush_failed(done: asyncio.Future[None]) -> None:
    if not done.cancelled() and (exc := done.exception()) is not None:
        # Not fatal: the entries are in the page cache; a machine crash before the next flush makes the store
        # start over at the next start (see shadow_store), costing whole-row updates, never a wrong one.
        log.warning("flushing the row shadows to disk failed: %s", exc)


def entity_prefix(entity: str) -> bytes:
    return entity.encode() + b"\0"


class FieldShadow:
    """Narrows ``changed`` (and, in ``rows`` mode, fills unchanged TOAST) for a batch; see the module docstring."""

    def __init__(
        self,
        path: Path,
        slot: str,
        mode: Mode,
        columns_of: Callable[[str], tuple[str, ...] | None],
        *,
        cache_rows: int = 50_000,
    ) -> None:
        self.mode = mode
        self.columns_of = columns_of
        self.cache_rows = cache_rows
        self.store = ShadowStore(path, slot)
        self._mem: dict[tuple[str, Key], Entry] = {}  # (entity, key) -> versions: a cache of the store
        self._prefixes: dict[str, bytes] = {}
        self._confirmed: Position | None = None
        self._synced_at = 0.0
        self._lock = asyncio.Lock()  # one store call at a time (LMDB write transactions belong to one thread)
        self._syncing: asyncio.Future[None] | None = None  # the flush to disk under way (see confirmed)

    async def open(self, resume_after: Position | None) -> bool:
        """Open the store; False when it started over (it was behind the checkpoint)."""
        self._confirmed = resume_after
        return await asyncio.to_thread(self.store.open, resume_after)

    async def close(self) -> None:
        async with self._lock:
            if self._syncing is not None:
                await asyncio.gather(self._syncing, return_exceptions=True)  # store.close flushes again
                self._syncing = None
            await asyncio.to_thread(self.store.close)
        self._mem.clear()

    async def confirmed(self, position: Position) -> None:
        """The engine committed ``position``: versions before it are no longer needed by any replay."""
        if self._confirmed is None or position > self._confirmed:
            self._confirmed = position
        now = time.monotonic()
        if now - self._synced_at >= SYNC_EVERY and (self._syncing is None or self._syncing.done()):
            self._synced_at = now
            # In the background and outside the lock: a flush to disk can take tens of milliseconds, and the
            # commit that asked for it (and the next batch's store write) need not wait for it. LMDB allows a
            # flush beside a write transaction of another thread.
            self._syncing = asyncio.ensure_future(asyncio.to_thread(self.store.sync))
            self._syncing.add_done_callback(_flush_failed)

    async def advance(self, position: Position) -> None:
        """A batch without events reached ``position`` (heartbeats, other tables' changes skipped): the store
        says so too, so that a checkpoint there does not look ahead of it at the next start."""
        async with self._lock:
            self.store.write([], [], position)

    # --- one batch ----------------------------------------------------------------------------

    async def apply(self, events: list[ChangeEvent], position: Position | None = None) -> list[ChangeEvent]:
        """Narrow (and fill) the batch's updates in place, then store its rows' new versions; returns ``events``.

        Written for speed (it sees every change): one dict lookup per event, the
        entry's list reused when the event is newer than all of it (the common
        case; a replay filters it).
        """
        if not events:
            return events
        await self._load(events)
        mem = self._mem
        rows_mode = self.mode == "rows"
        confirmed = self._confirmed
        touched: dict[tuple[str, Key], None] = {}
        truncated: list[str] = []
        moved: tuple[ChangeEvent, Row | None] | None = None  # a delete just before: an update that moved the key
        for i, e in enumerate(events):
            op = e.op
            if op == TRUNCATE:
                truncated.append(e.entity)
                for k in [k for k in mem if k[0] == e.entity]:
                    del mem[k]
                    touched.pop(k, None)
                moved = None
                continue
            ident = (e.entity, e.key)
            pos = e.position
            entry = mem.get(ident)
            if entry is None and op == INSERT and moved is None and e.after is not None:  # most common: short
                mem[ident] = [(pos, e.after, False)]
                touched[ident] = None
                continue
            if entry is None:
                versions: Entry = []
            elif entry[-1][0] < pos:
                versions = entry
            else:  # a replay: what a previous run produced from this event on is produced again
                versions = [v for v in entry if v[0] < pos]
            after = e.after
            if op == UPDATE:
                if versions and after is not None and e.before is None:
                    prior = versions[-1][1]
                    if prior is not None:
                        e = events[i] = self._narrow(e, after, prior, versions[-1][2])
                versions.append((pos, e.after, False))
            elif op == DELETE:
                versions.append((pos, None, False))
                moved = (e, versions[-2][1] if len(versions) > 1 else None)
                mem[ident] = self._trim(versions, confirmed) if len(versions) > 1 else versions
                touched[ident] = None
                continue
            elif after is not None:  # insert, snapshot
                if rows_mode and moved is not None and op == INSERT:
                    gone, base = moved
                    if gone.entity == e.entity and gone.position[0] == pos[0] and base is not None:
                        e = events[i] = self._fill(e, base)
                versions.append((pos, e.after, False))
            else:
                moved = None
                continue
            moved = None
            mem[ident] = self._trim(versions, confirmed) if len(versions) > 1 else versions
            touched[ident] = None
        await self._store(touched, truncated, position or events[-1].position)
        if len(mem) > self.cache_rows:
            self._evict()
        return events

    @staticmethod
    def _trim(versions: Entry, confirmed: Position | None) -> Entry:
        """Drop versions older than the newest one at or before the confirmed position."""
        if confirmed is None:
            return versions
        keep = 0
        for i, (p, _, _) in enumerate(versions):
            if p <= confirmed:
                keep = i
            else:
                break
        return versions[keep:] if keep else versions

    def _narrow(self, e: ChangeEvent, after: Row, prior: Row, stored: bool) -> ChangeEvent:
        """The update with its exact ``changed`` (and, in ``rows`` mode, its unchanged TOAST filled)."""
        compare = _normal(after, self.mode) if stored else after
        changed = tuple(
            n
            for n, v in compare.items()
            if (p := prior.get(n, _MISSING)) is _MISSING or p != v or type(p) is not type(v)
        )
        if self.mode == "rows":
            missing = [n for n in self.columns_of(e.entity) or () if n not in after and n in prior]
            if missing:
                return e.replace(after={**after, **{n: prior[n] for n in missing}}, changed=changed)
        return e.replace(changed=changed)

    def _fill(self, e: ChangeEvent, base: Row) -> ChangeEvent:
        after = e.after
        assert after is not None
        missing = [n for n in self.columns_of(e.entity) or () if n not in after and n in base]
        if not missing:
            return e
        return e.replace(after={**after, **{n: base[n] for n in missing}})

    # --- the store -----------------------------------------------------------------------------

    def _key(self, ident: tuple[str, Key]) -> bytes:
        prefix = self._prefixes.get(ident[0])
        if prefix is None:
            prefix = self._prefixes[ident[0]] = entity_prefix(ident[0])
        return prefix + _encode(ident[1])

    async def _load(self, events: Sequence[ChangeEvent]) -> None:
        """Read the entries of the batch's updated and deleted rows that are not in memory."""
        mem = self._mem
        need: dict[bytes, tuple[str, Key]] = {}
        for e in events:
            if e.op == UPDATE or e.op == DELETE:
                ident = (e.entity, e.key)
                if ident not in mem:
                    need[self._key(ident)] = ident
        if not need:
            return
        async with self._lock:
            found = self.store.get_many(list(need))
        rows_mode = self.mode == "rows"
        for k, data in found.items():
            mem[need[k]] = [
                (tuple(pos), row if row is None or not rows_mode else unpack_value(row), True)
                for pos, row, *_ in msgspec.msgpack.decode(data)
            ]

    async def _store(self, touched: dict[tuple[str, Key], None], truncated: list[str], high: Position) -> None:
        puts: list[tuple[bytes, bytes]] = []
        deletes: list[bytes] = []
        c = self._confirmed
        mem = self._mem
        for ident in touched:
            versions = mem[ident]
            key = self._key(ident)
            if len(versions) == 1 and versions[0][1] is None and c is not None and versions[0][0] <= c:
                deletes.append(key)  # a confirmed delete: nothing left to compare with
                del mem[ident]
                continue
            puts.append((key, self._versions_bytes(versions)))
        async with self._lock:
            for entity in truncated:
                await asyncio.to_thread(self.store.drop_prefix, entity_prefix(entity))
            self.store.write(puts, deletes, high)

    def _versions_bytes(self, versions: Entry) -> bytes:
        """An entry as the store keeps it: ``[[position, row or nil, flag], ...]``.

        ``fingerprint``: the rows as they are, in one encoding when they are
        short (the common case); a row longer than ROW_LIMIT encoded has its
        long values as digests (the rule :func:`_normal` follows). ``rows``:
        each row exact (pack_value).
        """
        if self.mode == "rows":
            return _encode([(p, None if r is None else pack_value(r)) for p, r, _ in versions])
        data = _encode(versions)
        if len(data) <= ROW_LIMIT:
            return data
        return _encode([(p, None if r is None or s else _short(r)) for p, r, s in versions])

    def _evict(self) -> None:
        """Forget the older half of the cache (everything is in the store)."""
        drop = len(self._mem) // 2
        for ident in list(self._mem)[:drop]:
            del self._mem[ident]
