"""Binlog retention of a MariaDB/MySQL source: is its checkpoint's binlog file still on the server?

The value (metric ``binlog_retention``) of a pipeline whose checkpoint is a streamed
binlog position:

- ``0``: its file is on the server and is not the oldest one (or is the only one: the
  server never purges the file it writes);
- ``1``: its file is the oldest of several, the next to go when retention
  (``binlog_expire_logs_seconds``, ``PURGE BINARY LOGS``) purges (a warning);
- ``2``: its file is gone; the source refuses to resume there (a new snapshot is the recovery).

None when there is nothing to judge: no checkpoint yet, a snapshot position, a file list
that cannot be read (the reading keeps its last value).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

OK, OLDEST, PURGED = 0.0, 1.0, 2.0


def retention(position: Sequence[Any] | None, files: Sequence[str]) -> float | None:
    """The retention value of checkpoint ``position`` given the server's binlog files (``SHOW BINARY LOGS``)."""
    from tidesync.sources.mariadb.positions import file_seq, is_snapshot

    if not position or is_snapshot(position) or not files:
        return None
    seqs = sorted(file_seq(f) for f in files)
    seq = int(position[0])
    if seq not in seqs:
        return PURGED
    if seq == seqs[0] and len(seqs) > 1:
        return OLDEST
    return OK


def is_binlog_source(source: Any) -> bool:
    return getattr(getattr(source, "config", None), "type", None) in ("mariadb", "mysql")


async def read_retention(source: Any, position: Sequence[Any] | None) -> float | None:
    """:func:`retention` for ``source`` (a MariaDB/MySQL source), reading the file list on its own connection."""
    if not position:
        return None

    def files() -> list[str]:
        from tidesync.sources.mariadb import server

        conn = server.connect(source.config.connect_args())
        try:
            return server.binlog_files(conn)
        finally:
            conn.close()

    return retention(position, await asyncio.to_thread(files))
