"""Positions of the binlog source: comparable tuples the engine checkpoints, and where to resume from them.

A position is a 4-tuple ``(file_seq, offset, index, gtid)``:

- streamed rows: ``file_seq`` is the binlog file's number (``mariadb-bin.000042`` -> 42),
  ``offset`` the byte offset where the row's transaction starts in that file (its GTID
  event, or its BEGIN when the server writes no GTID events), ``index`` the row's place
  among the captured rows of that transaction (0, 1, ...), and ``gtid`` the
  transaction's GTID as the server prints it (MariaDB ``domain-server-seq``, MySQL
  ``uuid:n``; ``""`` when there is none). The GTID is carried for people and tools; order
  and resumption use file and offset, which both servers have.
- a transaction boundary (an idle checkpoint, or a transaction with nothing captured):
  ``(file_seq, offset_of_the_next_transaction, -1, "")``, before every row of that transaction.
- snapshot rows: ``(0, table_index, chunk, row)``, all before any streamed position.

Tuples compare element by element, so these sort in binlog order: the first three
elements are unique per event, and the fourth is never reached between two different
events. Positions round-trip through JSON lists.

Resuming *after* a streamed position means reading from the start of its transaction
and skipping the rows at or before it: a checkpoint may fall inside a
transaction (a batch ends at ``max_events``), and nothing at or before it is produced again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.event import Position

_SEQ = re.compile(r"\.(\d+)$")


def file_seq(name: str) -> int:
    """The number of a binlog file (``mariadb-bin.000042`` -> 42)."""
    m = _SEQ.search(name)
    if m is None:
        raise ValueError(f"not a binlog file name: {name!r}")
    return int(m.group(1))


def row_position(seq: int, offset: int, index: int, gtid: str) -> Position:
    return (seq, offset, index, gtid)


def boundary_position(seq: int, next_offset: int) -> Position:
    """Everything before the transaction starting at ``next_offset`` is done."""
    return (seq, next_offset, -1, "")


def snapshot_position(table_index: int, chunk: int, row: int) -> Position:
    return (0, table_index, chunk, row)


def is_snapshot(position: Sequence[Any]) -> bool:
    return bool(position) and position[0] == 0


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the binlog reader starts: a file, and the offset of a transaction in it.

    ``after`` is the checkpoint resumed after (None: nothing to skip): rows of the
    transaction at ``offset`` at or before it were handed out already.
    """

    file: str
    offset: int
    after: Position | None = None

    @property
    def seq(self) -> int:
        return file_seq(self.file)


def resume_after(position: Position, files: Sequence[str]) -> Resume | None:
    """Where to resume after a streamed ``position``, given the binlog files the server still has (oldest first).

    None when the position's file is no longer on the server (purged by retention):
    the caller must refuse to go on, never skip ahead silently.
    """
    seq, offset = int(position[0]), int(position[1])
    for name in files:
        if file_seq(name) == seq:
            return Resume(name, offset, tuple(position))
    return None


def describe(position: Sequence[Any]) -> str:
    """A position for people: ``mariadb-bin #42 @ 1234 row 3 (gtid 0-1-17)`` or ``snapshot table 1 chunk 2 row 5``."""
    if is_snapshot(position):
        return f"snapshot table {position[1]} chunk {position[2]} row {position[3]}"
    text = f"binlog file #{position[0]} @ {position[1]}"
    if int(position[2]) >= 0:
        text += f" row {position[2]}"
    if len(position) > 3 and position[3]:
        text += f" (gtid {position[3]})"
    return text
