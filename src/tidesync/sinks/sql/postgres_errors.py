"""psycopg errors -> tidesync errors, for the Postgres sink: the one place they are translated.

By SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html):

- transient (retry): class 08 connection exception, 40001 serialization
  failure, 40P01 deadlock, 55P03 lock not available (lock_timeout), 57014
  query canceled (statement_timeout), 57P01-57P05 shutdown/admin commands,
  53 insufficient resources (too many connections, disk full), 58 system error;
  and any error without a SQLSTATE that psycopg raises for a broken
  connection (OperationalError, InterfaceError).
- permanent (dead-letter): 22 data exception (bad value), 23 integrity
  constraint (not null, unique, check, foreign key), 42 syntax or access rule
  (missing table or column, permission), and anything else.
"""

from __future__ import annotations

import psycopg

from tidesync.errors import DeliveryError, PermanentError, TransientError

_TRANSIENT_CLASSES = ("08", "53", "58")
_TRANSIENT = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "55P03": "lock timeout",
    "57014": "statement canceled (timeout)",
    "57P01": "the session was terminated (administrator command or shutdown)",
    "57P02": "the server crashed",
    "57P03": "the server is not accepting connections yet",
    "57P04": "database dropped",
    "57P05": "idle session timeout",
}
# Errors after which the session is gone, so the sink connects again on the next write.
_LOST = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})

_HINTS = {
    "42P01": "the table does not exist; create it or set create_tables: true",
    "42703": "a column does not exist; add it, or set evolve: add_columns",
    "42501": "the sink's user lacks a privilege; grant it (INSERT, UPDATE, DELETE, TRUNCATE on the table)",
    "42P10": "the key columns have no unique index; declare a primary key or unique index, or fix keys:",
    "23502": "a NOT NULL column got no value (an update inserting a missing row only knows the event's fields)",
}


def classify(exc: BaseException, where: str) -> tuple[DeliveryError, bool]:
    """The tidesync error for ``exc``, and whether the connection is lost."""
    state = getattr(exc, "sqlstate", None)
    detail = _detail(exc)
    if state is None:
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, OSError)):
            return TransientError(f"connection to {where} lost or refused: {detail}; will reconnect"), True
        if isinstance(exc, psycopg.Error):
            # Raised before reaching the server: a value psycopg cannot send.
            return PermanentError(f"{where} cannot take a value of this batch: {detail}"), False
        return PermanentError(f"writing to {where} failed: {type(exc).__name__}: {detail}"), False
    if state in _TRANSIENT or state[:2] in _TRANSIENT_CLASSES:
        what = _TRANSIENT.get(state, "connection or resource problem")
        lost = state in _LOST or state[:2] == "08"
        then = "; will reconnect" if lost else ""
        return TransientError(f"{what} in {where} [{state}]: {detail}{then}"), lost
    hint = _HINTS.get(state)
    if hint is None and state[:2] == "22":
        hint = "a value does not fit its column (type, length or range)"
    if hint is None and state[:2] == "23":
        hint = "a constraint of the destination rejects a row"
    suffix = f" ({hint})" if hint else ""
    return PermanentError(f"{where} rejected the batch [{state}]: {detail}{suffix}"), False


def _detail(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
