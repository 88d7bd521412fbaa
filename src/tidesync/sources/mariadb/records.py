"""Binlog row events -> records: exact row images, change events, dead letters, new table shapes.

The part of the binlog reader that needs no connection (apart from one lookup of
which columns hold JSON, passed in): it keeps each captured table's shape and row
decoder by table map, decodes row images (``rows.py``, else mysql-replication's
own decoding), and builds the :data:`Record` s the reader hands over:

- a ChangeEvent, position ``(file_seq, tx_offset, index, gtid)`` (see ``positions.py``), with the
  origin ``marker.ORIGIN`` when a session with ``skip_replication`` wrote it (a sync's own write);
- :class:`Rejected`: a row the source cannot represent (a zero date under
  ``zero_dates: dead_letter``), with its reason, in the row's place;
- :class:`Boundary`: a transaction ended; its position is a checkpoint before the next one;
- :class:`Shape`: a captured table's columns changed (ALTER TABLE seen as a new table map),
  placed right before the first row of the new shape, whose position it carries.

Schema changes are read from the table maps themselves: with ``binlog_row_metadata=FULL``
each one names the table's columns as they are at that point of the binlog, so a backlog
that spans an ALTER TABLE decodes rows before and after it with the right names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.bitmap import BitGet  # type: ignore[import-untyped]
from pymysqlreplication.row_event import (  # type: ignore[import-untyped]
    DeleteRowsEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from tidesync.errors import SourceError
from tidesync.event import DELETE, INSERT, UPDATE, ChangeEvent, Position, Row, diff_fields
from tidesync.sources.mariadb.marker import origin_of
from tidesync.sources.mariadb.rows import RowDecoder, compile_decoder, event_payload, full_images
from tidesync.sources.mariadb.tables import TableShape, entity_name
from tidesync.sources.mariadb.types import ColType, from_table_map

log = logging.getLogger("tidesync.sources.mariadb")


@dataclass(frozen=True, slots=True)
class Rejected:
    event: ChangeEvent
    reason: str

    @property
    def position(self) -> Position:
        return self.event.position


@dataclass(frozen=True, slots=True)
class Boundary:
    position: Position


@dataclass(frozen=True, slots=True)
class Shape:
    shape: TableShape
    since: Position


Record = ChangeEvent | Rejected | Boundary | Shape
RowRecord = ChangeEvent | Rejected  # what a row gives


class RecordMaker:
    """Records from the captured tables' table-map and rows events (see the module docstring).

    ``shapes`` (entity -> shape) starts as ``information_schema`` described the tables at open
    and follows the table maps; ``json_columns(database, table)`` names a table's JSON columns.
    """

    def __init__(
        self,
        tables: set[tuple[str, str]],
        shapes: dict[str, TableShape],
        zero_dates: str,
        json_columns: Callable[[str, str], frozenset[str]],
    ) -> None:
        self.tables = tables
        self.shapes = dict(shapes)
        self.zero_dates = zero_dates
        self._json_lookup = json_columns
        self._json: dict[tuple[str, str], frozenset[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        # table id -> (its columns, the compiled row decoder for them or None): table maps repeat every transaction
        self._decoders: dict[int, tuple[tuple[ColType, ...], RowDecoder | None]] = {}
        self.fast_rows = 0  # rows events decoded by rows.py (the rest: by mysql-replication)

    def forget_json(self) -> None:
        """After DDL: which columns hold JSON may have changed."""
        self._json.clear()

    def table_map(self, ev: Any) -> TableShape | None:
        """Note a captured table's map (and its row decoder); the table's new shape when its columns changed."""
        entity = entity_name(ev.schema, ev.table)
        names = [c.name for c in ev.columns]
        if any(not n for n in names):
            raise SourceError(
                f"the binlog's table map of {entity} carries no column names: set binlog_row_metadata = FULL"
            )
        jsons = self._json.get((ev.schema, ev.table))
        if jsons is None:
            jsons = self._json[(ev.schema, ev.table)] = self._json_lookup(ev.schema, ev.table)
        cols = tuple(from_table_map(c, bool(BitGet(ev.null_bitmask, i)), jsons) for i, c in enumerate(ev.columns))
        key = tuple(c.name for c in ev.columns if c.is_primary) or tuple(names)
        known = self._decoders.get(ev.table_id)
        if known is None or known[0] != cols:
            self._decoders[ev.table_id] = (cols, compile_decoder(ev.columns, cols))
        current = self.shapes.get(entity)
        if current is not None and current.cols == cols and current.key == key:
            return None
        shape = TableShape(entity, cols, key)
        self.shapes[entity] = shape
        if current is not None:
            log.info("table %s changed shape in the binlog: %s", entity, ", ".join(names))
        return shape

    def rows(
        self, shape: TableShape, ev: Any, seq: int, tx_offset: int, index: int, gtid: str
    ) -> tuple[list[RowRecord], int]:
        """The records of a rows event whose transaction starts at ``(seq, tx_offset)``, its rows numbered on from
        ``index``; and the index of its last row. Images by ``rows.py`` when it covers the table and they are FULL
        (a compiled loop per event type below), else by mysql-replication."""
        kind = _KIND[type(ev)]
        dec = self._decoders.get(ev.table_id)
        decoder = dec[1] if dec is not None else None
        if decoder is None or not full_images(ev, decoder, kind == UPDATE):
            return self._general(shape, ev, self._library_images(shape, ev, kind), seq, tx_offset, index, gtid)
        self.fast_rows += 1
        images, zeros = decoder.decode(event_payload(ev))
        if zeros is not None:
            return self._general(shape, ev, _pairs(images, zeros, kind), seq, tx_offset, index, gtid)
        entity, key, ts, origin = shape.entity, shape.key_getter, float(ev.timestamp), origin_of(ev.packet.flags)
        out: list[RowRecord] = []
        append = out.append
        if kind != UPDATE:  # one event per image
            before = kind == DELETE
            for row in images:
                index += 1
                at = (seq, tx_offset, index, gtid)
                if before:
                    append(ChangeEvent(entity, key(row), DELETE, row, None, None, at, ts, origin))
                else:
                    append(ChangeEvent(entity, key(row), INSERT, None, row, None, at, ts, origin))
            return out, index
        diff = decoder.diff
        it = iter(images)
        for old, new in zip(it, it, strict=True):
            index += 1
            at = (seq, tx_offset, index, gtid)
            k, old_key = key(new), key(old)
            if old_key == k:
                append(ChangeEvent(entity, k, UPDATE, old, new, diff(old, new), at, ts, origin))
            else:  # the key changed: the old record is gone, a new one is there
                append(ChangeEvent(entity, old_key, DELETE, old, None, None, at, ts, origin))
                append(ChangeEvent(entity, k, INSERT, None, new, None, (*at, "k"), ts, origin))
        return out, index

    def _library_images(
        self, shape: TableShape, ev: Any, kind: str
    ) -> Iterator[tuple[Row | None, Row | None, list[str]]]:
        """(before, after, zero-date columns) of each row, decoded by mysql-replication."""
        for row in ev.rows:
            if kind == UPDATE:
                before, z1 = shape.from_binlog(row["before_values"], row.get("before_none_sources"))
                after, z2 = shape.from_binlog(row["after_values"], row.get("after_none_sources"))
                yield before, after, z1 + z2
            else:
                image, zero = shape.from_binlog(row["values"], row.get("none_sources"))
                yield (image, None, zero) if kind == DELETE else (None, image, zero)

    def _general(
        self,
        shape: TableShape,
        ev: Any,
        images: Iterable[tuple[Row | None, Row | None, list[str]]],
        seq: int,
        tx_offset: int,
        index: int,
        gtid: str,
    ) -> tuple[list[RowRecord], int]:
        out: list[RowRecord] = []
        for before, after, zero in images:
            index += 1
            out.extend(self.events(shape, ev, before, after, zero, (seq, tx_offset, index, gtid)))
        return out, index

    def events(
        self, shape: TableShape, ev: Any, before: Row | None, after: Row | None, zero: list[str], at: Position
    ) -> list[RowRecord]:
        """The records of one row (the general path: zero dates, images mysql-replication decoded)."""
        ts = float(ev.timestamp)
        origin = origin_of(ev.packet.flags)  # written by a sync's endpoint (``marker.py``)
        key = shape.key_of(after if after is not None else before or {})
        if zero:
            rejected = self._zero(shape, zero, key, at, ts)
            if rejected is not None:
                return [rejected]
        if after is None:
            return [ChangeEvent(shape.entity, key, DELETE, before, None, None, at, ts, origin)]
        if before is None:
            return [ChangeEvent(shape.entity, key, INSERT, None, after, None, at, ts, origin)]
        old_key = shape.key_of(before)
        if old_key != key:  # the key changed: the old record is gone, a new one is there
            return [
                ChangeEvent(shape.entity, old_key, DELETE, before, None, None, at, ts, origin),
                ChangeEvent(shape.entity, key, INSERT, None, after, None, (*at, "k"), ts, origin),
            ]
        return [ChangeEvent(shape.entity, key, UPDATE, before, after, diff_fields(before, after), at, ts, origin)]

    def _zero(self, shape: TableShape, columns: list[str], key: Any, at: Position, ts: float) -> Rejected | None:
        if self.zero_dates == "dead_letter":
            reason = f"zero date in {shape.entity} column(s) {', '.join(columns)} (zero_dates: dead_letter)"
            return Rejected(ChangeEvent(shape.entity, key, INSERT, position=at, committed_at=ts), reason)
        for c in columns:
            if (shape.entity, c) not in self._warned:
                self._warned.add((shape.entity, c))
                log.warning(
                    "zero date in %s.%s read as NULL (zero_dates: null; warned once per column)", shape.entity, c
                )
        return None


_KIND = {WriteRowsEvent: INSERT, UpdateRowsEvent: UPDATE, DeleteRowsEvent: DELETE}


def _pairs(
    images: list[Row], zeros: dict[int, list[str]], kind: str
) -> Iterator[tuple[Row | None, Row | None, list[str]]]:
    """(before, after, zero-date columns) of each row of decoded images, for the general path."""
    if kind == UPDATE:
        for i in range(0, len(images), 2):
            yield images[i], images[i + 1], zeros.get(i, []) + zeros.get(i + 1, [])
    else:
        for i, image in enumerate(images):
            yield (image, None, zeros.get(i, [])) if kind == DELETE else (None, image, zeros.get(i, []))
