"""The on-disk half of the Postgres source's row shadows: an LMDB environment beside the spill directory.

Why LMDB and not the state store: a shadow entry is written for nearly every
change (inserts and updates alike) and read for every update. Through the
state store's SQL rows that costs about 18 µs per written row and 9 µs per
read one (SQLite, measured); LMDB, an embedded memory-mapped B+tree, does both
in about 1-2 µs from Python, batched per read.

Layout (one environment per slot, ``<work_dir>/<slot>.shadow``):

- ``rows``: ``entity NUL msgpack(key)`` -> the entry's versions, encoded by
  the keeper (:mod:`.fields`);
- ``meta``: ``high`` -> the position of the newest batch whose shadows were
  written (msgpack list), ``slot`` -> the slot name.

Durability: writes go to the page cache at once (a process killed with
SIGKILL loses nothing); they reach the disk at :meth:`ShadowStore.sync`, which
the keeper calls at most once a second after a commit. After a machine crash
the shadows may be older than the engine's checkpoint: :meth:`open` sees it
(``high`` behind the position the source resumes from) and starts empty,
which only costs whole-row updates for rows not seen since.

Every call blocks (LMDB is synchronous). The keeper makes the quick ones, a
batch's reads and its write (a few milliseconds for 1,000 rows: the file is
mapped, and a write reaches the page cache only), on the event loop itself:
handing them to a worker thread cost more than they do, in switches between
the threads for the interpreter lock (measured on the drain of 500,000
changes: about 9% more CPU time). Opening, closing, dropping a table's
entries and :meth:`ShadowStore.sync` (a flush to disk) run in a worker
thread; the sync may run beside another call (LMDB flushes the environment's
file beside a transaction of another thread), the others one at a time.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from tidesync.event import Position

log = logging.getLogger("tidesync.sources.postgres")

_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder()
MAP_SIZE = 1 << 40  # address space only: the file grows with what is stored (sparse)


class ShadowStore:
    def __init__(self, path: Path, slot: str) -> None:
        self.path = path
        self.slot = slot
        self._env: Any = None
        self._rows: Any = None
        self._meta: Any = None

    def open(self, resume_after: Position | None) -> bool:
        """Open (creating it if needed); True when what it held was kept.

        It starts empty when the source starts from nothing (``resume_after``
        None) or when it is behind ``resume_after`` (the position the engine
        committed, from which the source resumes).
        """
        self._open_env()
        with self._env.begin(db=self._meta) as tx:
            slot = tx.get(b"slot")
            high = tx.get(b"high")
        # A start from nothing (a new pipeline, or one dropped and made again under the same slot name) keeps
        # nothing: shadows from an earlier life would be taken for the rows' last values.
        kept = slot is not None and slot.decode() == self.slot and resume_after is not None
        if kept and resume_after is not None and resume_after[0] != 0:
            # (a snapshot position, 0 first, is re-read whole anyway: nothing to compare)
            stored = tuple(_DEC.decode(high)) if high is not None else None
            if stored is None or stored < tuple(resume_after):
                log.warning(
                    "the row shadows of slot %s end at %s, before the checkpoint %s (a machine crash, or files "
                    "from elsewhere): starting them over; updates of rows not seen since carry every column "
                    "until the row's next change",
                    self.slot,
                    stored,
                    tuple(resume_after),
                )
                kept = False
        if not kept:
            self.close()
            shutil.rmtree(self.path, ignore_errors=True)
            self._open_env()
            with self._env.begin(write=True, db=self._meta) as tx:
                tx.put(b"slot", self.slot.encode())
        return kept

    def _open_env(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # sync=False: a commit reaches the page cache, not the disk (see the module docstring: sync()).
        self._env = lmdb.open(str(self.path), map_size=MAP_SIZE, max_dbs=2, sync=False, metasync=False, lock=True)
        self._rows = self._env.open_db(b"rows")
        self._meta = self._env.open_db(b"meta")

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        with self._env.begin(db=self._rows, buffers=False) as tx:
            cur = tx.cursor()
            return dict(cur.getmulti(keys))

    def write(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes], high: Position | None) -> None:
        """One transaction: the entries, and the position they reach."""
        with self._env.begin(write=True) as tx:
            if deletes:
                for k in deletes:
                    tx.delete(k, db=self._rows)
            cur = tx.cursor(db=self._rows)
            cur.putmulti(puts)
            if high is not None:
                tx.put(b"high", _ENC.encode(list(high)), db=self._meta)

    def drop_prefix(self, prefix: bytes) -> int:
        """Delete every entry whose key starts with ``prefix`` (a truncated table)."""
        n = 0
        with self._env.begin(write=True, db=self._rows) as tx:
            cur = tx.cursor()
            if cur.set_range(prefix):
                while cur.key().startswith(prefix):
                    if not cur.delete():
                        break
                    n += 1
        return n

    def sync(self) -> None:
        if self._env is not None:
            self._env.sync(True)

    def count(self) -> int:
        with self._env.begin(db=self._rows) as tx:
            return int(tx.stat(self._rows)["entries"])

    def close(self) -> None:
        if self._env is not None:
            try:
                self._env.sync(True)
            finally:
                self._env.close()
        self._env = self._rows = self._meta = None
