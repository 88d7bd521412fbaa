"""Streamed (protocol v2) transactions parked on disk until the server says commit or abort.

A transaction bigger than ``logical_decoding_work_mem`` arrives in chunks
before it commits, interleaved with other transactions. Its raw messages are
appended to one file per top-level transaction id; Stream Commit replays the
file through the decoder (reading it in blocks, so memory stays flat), and
Stream Abort deletes it (or, for a rolled-back subtransaction, remembers the
subtransaction id so its messages are skipped on replay).

File format: records of ``u32 length`` + pgoutput message bytes, exactly as
received (the in-stream form, with the transaction id after the type byte).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

_LEN = struct.Struct(">I")
_BLOCK = 1 << 20


class SpillFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.aborted: set[int] = set()
        self.count = 0
        self._fh = open(path, "wb", buffering=_BLOCK)  # noqa: SIM115 - closed by finish()/drop()

    def append(self, data: bytes) -> None:
        self._fh.write(_LEN.pack(len(data)))
        self._fh.write(data)
        self.count += 1

    def replay(self) -> Iterator[bytes]:
        """The messages in the order received; the file is deleted when the iterator is exhausted."""
        self._fh.close()
        try:
            with open(self.path, "rb", buffering=0) as fh:
                buf = b""
                pos = 0
                while True:
                    if len(buf) - pos < 4:
                        more = fh.read(_BLOCK)
                        if not more:
                            break
                        buf = buf[pos:] + more
                        pos = 0
                        continue
                    (n,) = _LEN.unpack_from(buf, pos)
                    if len(buf) - pos - 4 < n:
                        more = fh.read(max(_BLOCK, n))
                        if not more:
                            break
                        buf = buf[pos:] + more
                        pos = 0
                        continue
                    start = pos + 4
                    pos = start + n
                    yield buf[start:pos]
        finally:
            self.drop()

    def drop(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SpillDir:
    """The spill files of one slot, under ``root``; leftovers of an earlier run are removed on open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[int, SpillFile] = {}
        self.started = 0  # streamed transactions seen (a figure for tests and status)

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.clear()

    def clear(self) -> None:
        for f in self.files.values():
            f.drop()
        self.files.clear()
        if self.root.exists():
            for leftover in self.root.glob("*.spill"):
                leftover.unlink(missing_ok=True)

    def start(self, xid: int) -> SpillFile:
        old = self.files.pop(xid, None)
        if old is not None:
            old.drop()
        f = SpillFile(self.root / f"{xid}.spill")
        self.files[xid] = f
        self.started += 1
        return f

    def get(self, xid: int) -> SpillFile:
        f = self.files.get(xid)
        return f if f is not None else self.start(xid)

    def take(self, xid: int) -> SpillFile | None:
        return self.files.pop(xid, None)
