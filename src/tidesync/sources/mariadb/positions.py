"""Positions of the binlog source: comparable tuples the engine checkpoints, and where to resume from them.

A position is a 4-tuple ``(file_seq, offset, index, gtid)``:

- streamed rows: ``file_seq`` is the binlog file's number (``mariadb-bin.000042`` -> 42),
  ``offset`` the byte offset where the row's transaction starts in that file (its GTID
  event, or its BEGIN when the server writes no GTID events), ``index`` the row's place
  among the captured rows of that transaction (0, 1, ...), and ``gtid`` the
  transaction's GTID as the server prints it (MariaDB ``domain-server-seq``, MySQL
  ``uuid:n``; ``""`` when there is none). Order and resumption use file and offset, which
  both servers have; the GTID is the way back when the file is gone (below).
- a transaction boundary (an idle checkpoint, or a transaction with nothing captured):
  ``(file_seq, offset_of_the_next_transaction, -1, gtid_of_the_transaction_just_ended)``,
  before every row of the next transaction.
- the insert half of a key change: the row's position with ``"k"`` appended (after its delete half).
- snapshot rows: ``(0, table_index, chunk, row)``, all before any streamed position.

Tuples compare element by element, so these sort in binlog order: the first three
elements are unique per event, and the fourth is never reached between two different
events. Positions round-trip through JSON lists.

Resuming *after* a streamed position means reading from the start of its transaction
and skipping the rows at or before it: a checkpoint may fall inside a
transaction (a batch ends at ``max_events``), and nothing at or before it is produced again.

When the checkpoint's file is no longer on the server (purged by retention, or the
server's files were replaced), a MariaDB checkpoint that carries a GTID resumes by
GTID instead (:func:`resume_by_gtid`): after the boundary's transaction, or, inside a
transaction ``D-S-N``, from the GTID state just before it (``D-S-(N-1)``: on one
primary a domain's sequence numbers are consecutive) skipping the rows at or before
the checkpoint. Only when the server has one GTID domain, the checkpoint's, and still
has the binlog from there on.
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


def boundary_position(seq: int, next_offset: int, gtid: str = "") -> Position:
    """Everything before the transaction starting at ``next_offset`` is done; ``gtid``: the last one done."""
    return (seq, next_offset, -1, gtid)


def snapshot_position(table_index: int, chunk: int, row: int) -> Position:
    return (0, table_index, chunk, row)


def is_snapshot(position: Sequence[Any]) -> bool:
    return bool(position) and position[0] == 0


def within(position: Sequence[Any]) -> tuple[Any, ...]:
    """A streamed position's place inside its transaction: the row index and the key-change mark."""
    return (position[2], *position[4:])


_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def parse_gtid_state(state: str) -> dict[int, tuple[int, int]]:
    """A MariaDB GTID state (``0-1-17,2-5-9``) as ``{domain: (server_id, seq)}``; ``{}`` for an empty one."""
    out: dict[int, tuple[int, int]] = {}
    for part in state.split(","):
        m = _MARIADB_GTID.match(part.strip())
        if m is not None:
            out[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    return out


@dataclass(frozen=True, slots=True)
class Resume:
    """Where the binlog reader starts: a file and the offset of a transaction in it, or a MariaDB GTID state.

    ``after`` is the checkpoint resumed after (None: nothing to skip): rows of the
    transaction at ``offset`` (by GTID: the transaction ``after[3]``) at or before it
    were handed out already. ``gtid`` set: stream from that GTID state (``file`` is
    then ``""``: the server names the file in the stream's first rotate event).
    """

    file: str
    offset: int
    after: Position | None = None
    gtid: str | None = None

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


def resume_by_gtid(position: Position, server_state: str, oldest_state: str) -> Resume | None:
    """Where to resume after a streamed MariaDB ``position`` whose file is gone, by its GTID; None when it cannot.

    ``server_state`` is the server's ``@@gtid_binlog_pos`` (the last GTID it wrote per
    domain), ``oldest_state`` the GTID state at the start of its oldest binlog file
    (``BINLOG_GTID_POS(oldest, 4)``). None (the caller refuses to go on) when the
    position has no MariaDB GTID, the server writes more than that one domain (a
    single-domain position cannot say where the others were), the server's binlog no
    longer reaches back to it, or the server never wrote it.
    """
    if len(position) < 4 or not isinstance(position[3], str):
        return None
    m = _MARIADB_GTID.match(position[3])
    if m is None:
        return None
    domain, server_id, seq = (int(g) for g in m.groups())
    inside = int(position[2]) >= 0
    start = seq - 1 if inside else seq  # inside a transaction: read it again, from the state before it
    now = parse_gtid_state(server_state)
    if set(now) != {domain} or now[domain][1] < seq:
        return None
    oldest = parse_gtid_state(oldest_state).get(domain, (0, 0))[1]
    if start < oldest or start < 1:
        return None
    return Resume("", 0, tuple(position), f"{domain}-{server_id}-{start}")


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
