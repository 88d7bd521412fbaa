"""The row codec both state store backends share: parameters in, values out.

Keys, positions, rows and kv values are stored as msgpack from
:func:`tidesync.event.pack_value`, which keeps exact Python types; events as
:func:`tidesync.event.to_msgpack`. Both backends select the same columns in the
same order, so one set of decoders serves them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import msgspec

from tidesync.errors import LeaseLostError, StateStoreError
from tidesync.event import Key, Position, from_msgpack, pack_value, to_msgpack, unpack_value
from tidesync.state.store import (
    DeadLetter,
    DeadLetterFilter,
    Fence,
    JournalAppend,
    JournalEntry,
    NewDeadLetter,
    PipelineStatus,
    ShadowRow,
)

DLQ_COLUMNS = "id, pipeline, sink, event, error_class, error, attempts, first_failed_at, last_failed_at"
STATUS_COLUMNS = (
    "pipeline, state, position, events_applied, lag_seconds, last_committed_at, last_error, "
    "next_attempt_at, updated_at, extra"
)


def pack(value: Any, what: str) -> bytes:
    """``pack_value`` whose failure names the part of the state that could not be stored."""
    try:
        return pack_value(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StateStoreError(f"cannot store {what} in the state store: {exc}") from exc


def pack_optional(value: Any, what: str) -> bytes | None:
    return None if value is None else pack(value, what)


def check_fence(pipeline: str, fence: Fence, row: Any) -> None:
    """Raise :class:`LeaseLostError` unless the lease's ``(owner, epoch)`` ``row`` still has the fence's epoch."""
    if row is None or int(row[1]) != fence.epoch:
        holder = f"{row[0]} (epoch {row[1]})" if row else "nobody"
        raise LeaseLostError(
            f"pipeline {pipeline}: lease {fence.name} moved from epoch {fence.epoch} to {holder}; nothing committed"
        )


def shadow_params(s: ShadowRow) -> tuple[Any, ...]:
    """The row of a shadow write: ``(scope, entity, key, row, position, committed_at, origin)``."""
    return (
        s.scope,
        s.entity,
        pack(s.key, "shadow key"),
        pack(s.row, f"shadow row {s.entity} {s.key!r}"),
        pack_optional(s.position, "shadow position"),
        s.committed_at,
        s.origin,
    )


def journal_params(e: JournalAppend) -> tuple[Any, ...]:
    """The row of a journal append: ``(source, event_id, received_at, meta, body)``."""
    return (e.source, e.event_id, e.received_at, pack(e.meta, "journal meta") if e.meta else None, e.body)


def status_params(pipeline: str, st: PipelineStatus, events_applied: int) -> tuple[Any, ...]:
    return (
        pipeline,
        st.state,
        pack_optional(st.position, "status position"),
        events_applied,
        st.lag_seconds,
        st.last_committed_at,
        st.last_error,
        st.next_attempt_at,
        st.updated_at,
        pack(st.extra, "status extra"),
    )


def _as_text(value: Any, limit: int = 65536) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return "<not shown: nested too deep>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def new_dead_letter_params(d: NewDeadLetter) -> tuple[Any, ...]:
    """The row of a new dead letter.

    An event the codec cannot encode (a value nested deeper than it accepts, a type it
    does not know) is still parked, never lost to a failed commit: its row images are
    kept as text (``after: {"unencodable": ...}``) and the error says so; such an entry
    can be inspected and discarded, and its data is read again from the source.
    """
    error = d.error
    try:
        event = to_msgpack(d.event)
    except (TypeError, ValueError, OverflowError) as exc:
        e = d.event
        stand_in = msgspec.structs.replace(
            e,
            before=None,
            after={"unencodable": _as_text(e.after if e.after is not None else e.before)},
            changed=None,
        )
        try:
            event = to_msgpack(stand_in)
        except (TypeError, ValueError, OverflowError):
            raise StateStoreError(f"cannot store the dead letter's event in the state store: {exc}") from exc
        error = f"{error} (the event could not be stored whole: {exc}; its row is kept as text)"
    return (
        d.pipeline,
        d.sink,
        d.event.entity,
        pack(d.event.key, "dead letter key"),
        event,
        d.error_class,
        error,
        d.attempts,
        d.first_failed_at,
        d.last_failed_at,
    )


def dead_letter_from_row(r: Any) -> DeadLetter:
    return DeadLetter(
        id=r[0],
        pipeline=r[1],
        sink=r[2],
        event=from_msgpack(r[3]),
        error_class=r[4],
        error=r[5],
        attempts=r[6],
        first_failed_at=r[7],
        last_failed_at=r[8],
    )


def shadow_from_row(scope: str, entity: str, key: Key, r: Any) -> ShadowRow:
    """From columns ``(key, row, position, committed_at, origin, ...)``; ``key`` is given decoded."""
    return ShadowRow(
        scope=scope,
        entity=entity,
        key=key,
        row=unpack_value(r[1]),
        position=None if r[2] is None else unpack_value(r[2]),
        committed_at=r[3],
        origin=r[4],
    )


def journal_entry_from_row(source: str, r: Any) -> JournalEntry:
    """From columns ``(seq, event_id, received_at, meta, body)``."""
    return JournalEntry(
        seq=r[0],
        source=source,
        event_id=r[1],
        received_at=r[2],
        meta={} if r[3] is None else unpack_value(r[3]),
        body=bytes(r[4]),
    )


def status_from_row(r: Any) -> PipelineStatus:
    return PipelineStatus(
        pipeline=r[0],
        state=r[1],
        position=None if r[2] is None else unpack_value(r[2]),
        events_applied=r[3],
        lag_seconds=r[4],
        last_committed_at=r[5],
        last_error=r[6],
        next_attempt_at=r[7],
        updated_at=r[8],
        extra={} if r[9] is None else unpack_value(r[9]),
    )


def dlq_where(
    flt: DeadLetterFilter | None, ph: str, contains_sql: str, ids_sql: str, ids_param: Any
) -> tuple[str, list[Any]]:
    """A WHERE clause (or "") and its parameters for ``flt``.

    ``ph`` is the driver's placeholder; ``contains_sql`` and ``ids_sql`` hold
    one placeholder each, for the backend's substring test and id-list test.
    ``error_contains`` is a case-sensitive substring match.
    """
    if flt is None:
        return "", []
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("pipeline", flt.pipeline),
        ("sink", flt.sink),
        ("entity", flt.entity),
        ("error_class", flt.error_class),
    ):
        if value is not None:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    if flt.error_contains is not None:
        clauses.append(contains_sql)
        params.append(flt.error_contains)
    if flt.older_than is not None:
        clauses.append(f"last_failed_at < {ph}")
        params.append(flt.older_than)
    if flt.newer_than is not None:
        clauses.append(f"last_failed_at >= {ph}")
        params.append(flt.newer_than)
    if flt.ids is not None:
        clauses.append(ids_sql)
        params.append(ids_param(flt.ids))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _owned(text: str, names: Collection[str]) -> bool:
    return text in names or any(text.startswith((f"{n}:", f"{n}/")) for n in names)


def kv_owned(namespace: str, key: str, names: Collection[str]) -> bool:
    """Whether a kv entry belongs to one of ``names`` (the rule :meth:`StateStore.remove_pipeline` states)."""
    return _owned(key, names) or (":" in namespace and _owned(namespace.split(":", 1)[1], names))


def newest_parked(rows: Iterable[Any]) -> dict[tuple[str, Key], Position]:
    """(entity, key) -> the newest position parked for it, from (entity, key, event) rows."""
    out: dict[tuple[str, Key], Position] = {}
    for entity, key, event in rows:
        k = (entity, unpack_value(bytes(key)))
        position = from_msgpack(bytes(event)).position
        if k not in out or position > out[k]:
            out[k] = position
    return out
