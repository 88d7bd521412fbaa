"""Comparing one table pair by key range and row hash.

Walk (top level)
    The key space is cut into chunks of ``chunk_size`` source keys: ``(lo, hi]``
    where ``hi`` is the chunk's last source key (the last chunk is open-ended,
    so destination rows beyond the last source key are seen too).

``db`` mode
    Each chunk is hashed by both databases (:mod:`.side`); only differing
    chunks are descended into: a chunk is cut into ``fanout`` sub-ranges at keys
    of the side with more rows there, each hashed again, and so on until a range
    holds at most ``leaf_size`` rows; only those leaves' rows are fetched and
    compared row by row. Rows read beyond the top-level hashes: about one more
    hashing of each differing chunk (the first split), a fraction of that
    below, and the leaves.

``python`` mode
    Both sides' rows of a chunk are fetched once (the source rows go through the
    pipeline's transforms), hashed on their canonical form (:mod:`.canonical`)
    and the chunk digests compared; a differing chunk is compared row by row
    from the hashes already in memory, so no row is read twice.

Every difference found is a *suspect*: :mod:`.settle` reads it again from both
sides by key before it is reported or repaired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidesync.event import SNAPSHOT, ChangeEvent, Key, Row
from tidesync.reconcile.canonical import combine, encoder, row_hash
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.side import Reader
from tidesync.reconcile.target import TablePair

CKey = tuple[str, ...]


@dataclass(slots=True)
class Entry:
    """One row as compared: its key (as this side holds it), canonical texts and hash, and the row."""

    key: Key
    texts: tuple[str, ...]
    hash: int
    row: Row
    event: ChangeEvent | None = None  # source side: the transformed event the pipeline would write


@dataclass
class Suspect:
    source_key: Key | None
    dest_key: Key | None


@dataclass
class Walk:
    chunks: int = 0
    chunks_differing: int = 0
    leaves: int = 0
    top_hashed: dict[str, int] = field(default_factory=lambda: {"source": 0, "dest": 0})
    suspects: dict[CKey, Suspect] = field(default_factory=dict)
    unmappable: dict[CKey, str] = field(default_factory=dict)


class Lineup:
    """Turns rows of either side into comparable entries."""

    def __init__(self, pair: TablePair, transform: Any) -> None:
        self.pair = pair
        self.transform = transform
        self.key_text = encoder(pair.key_kinds)
        self.row_text = encoder(pair.kinds)

    def expected(self, rows: Sequence[Row]) -> tuple[dict[CKey, Entry], dict[CKey, str]]:
        """What the destination should hold for these source rows; and the rows the transforms reject."""
        pair = self.pair
        events = [ChangeEvent(pair.entity, tuple(r[k] for k in pair.source.key), SNAPSHOT, after=r) for r in rows]
        failed: dict[CKey, str] = {}
        if self.transform is not None:
            events, failures = self.transform.apply(events)
            for ev, why in failures:
                failed[self.key_text(ev.key)] = why
        out: dict[CKey, Entry] = {}
        columns = pair.dest.columns
        for ev in events:
            after = ev.after or {}
            texts = self.row_text([after.get(c) for c in columns])
            out[self.key_text(ev.key)] = Entry(ev.key, texts, row_hash(texts), after, ev)
        return out, failed

    def actual(self, rows: Sequence[Row]) -> dict[CKey, Entry]:
        dest = self.pair.dest
        out: dict[CKey, Entry] = {}
        for r in rows:
            key = tuple(r[k] for k in dest.key)
            texts = self.row_text([r[c] for c in dest.columns])
            out[self.key_text(key)] = Entry(key, texts, row_hash(texts), r)
        return out

    def differing_fields(self, a: Entry, b: Entry) -> tuple[str, ...]:
        return tuple(c for c, x, y in zip(self.pair.dest.columns, a.texts, b.texts, strict=True) if x != y)


def digest(entries: dict[CKey, Entry]) -> tuple[int, int]:
    return len(entries), combine([e.hash for e in entries.values()])


def classify(exp: dict[CKey, Entry], act: dict[CKey, Entry], walk: Walk) -> None:
    for ck, e in exp.items():
        a = act.get(ck)
        if a is None or a.hash != e.hash:
            walk.suspects[ck] = Suspect(e.key, a.key if a is not None else None)
    for ck, a in act.items():
        if ck not in exp and ck not in walk.unmappable:
            walk.suspects[ck] = Suspect(None, a.key)


class Walker:
    def __init__(
        self,
        lineup: Lineup,
        src: Reader,
        dst: Reader,
        options: ReconcileOptions,
        counted: Callable[[int], None] | None = None,
    ) -> None:
        """``counted``: told the source rows of each top-level chunk once it is compared (a progress display)."""
        self.lineup = lineup
        self.src = src
        self.dst = dst
        self.options = options
        self.counted = counted
        self.walk = Walk()

    async def run(self) -> Walk:
        if self.lineup.pair.mode == "db":
            await self._db_walk()
        else:
            await self._python_walk()
        return self.walk

    # --- python mode --------------------------------------------------------------------

    async def _python_walk(self) -> None:
        chunk = self.options.chunk_size
        src_key = self.lineup.pair.source.key
        lo: Key | None = None
        while True:
            src_rows = await self.src.rows(lo, None, limit=chunk)
            hi = tuple(src_rows[-1][k] for k in src_key) if len(src_rows) == chunk else None
            dst_rows = await self.dst.rows(lo, hi)
            self.walk.chunks += 1
            self.walk.top_hashed["source"] += len(src_rows)
            self.walk.top_hashed["dest"] += len(dst_rows)
            exp, failed = self.lineup.expected(src_rows)
            self.walk.unmappable.update(failed)
            act = {ck: e for ck, e in self.lineup.actual(dst_rows).items() if ck not in failed}
            if digest(exp) != digest(act):
                self.walk.chunks_differing += 1
                classify(exp, act, self.walk)
            if self.counted is not None:
                self.counted(len(src_rows))
            if hi is None:
                return
            lo = hi

    # --- db mode ------------------------------------------------------------------------

    async def _db_walk(self) -> None:
        lo: Key | None = None
        while True:
            hi = await self.src.boundary(lo, None, self.options.chunk_size)
            s = await self.src.hash_range(lo, hi)
            d = await self.dst.hash_range(lo, hi)
            self.walk.chunks += 1
            self.walk.top_hashed["source"] += s[0]
            self.walk.top_hashed["dest"] += d[0]
            if s != d:
                self.walk.chunks_differing += 1
                await self._descend(lo, hi, s[0], d[0])
            if self.counted is not None:
                self.counted(s[0])
            if hi is None:
                return
            lo = hi

    async def _descend(self, lo: Key | None, hi: Key | None, n_src: int, n_dst: int) -> None:
        size = max(n_src, n_dst)
        if size <= self.options.leaf_size:
            await self._leaf(lo, hi)
            return
        # Cut at keys of the side with more rows here, so every cut shrinks the range.
        splitter = self.src if n_src >= n_dst else self.dst
        step = math.ceil(size / self.options.fanout)
        bounds = await splitter.boundaries(lo, hi, step, self.options.fanout - 1)
        src_parts = await self.src.hash_buckets(lo, hi, bounds)
        dst_parts = await self.dst.hash_buckets(lo, hi, bounds)
        edges: list[Key | None] = [lo, *bounds, hi]
        for a, b, s, d in zip(edges, edges[1:], src_parts, dst_parts, strict=False):
            if s != d:
                await self._descend(a, b, s[0], d[0])

    async def _leaf(self, lo: Key | None, hi: Key | None) -> None:
        self.walk.leaves += 1
        exp, failed = self.lineup.expected(await self.src.rows(lo, hi))
        self.walk.unmappable.update(failed)
        act = {ck: e for ck, e in self.lineup.actual(await self.dst.rows(lo, hi)).items() if ck not in failed}
        classify(exp, act, self.walk)
