"""psycopg errors -> tidesync errors, for the Postgres sink: the one place they are translated.

By SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html):

- transient (retry): class 08 connection exception, 40001 serialization
  failure, 40P01 deadlock, 55P03 lock not available (lock_timeout), 57014
  query canceled (statement_timeout), 57P01-57P05 shutdown/admin commands,
  53 insufficient resources (too many connections, disk full), 58 system error;
  and any error without a SQLSTATE that psycopg raises for a broken
  connection (OperationalError, InterfaceError).
- systemic at connect: libpq reports a refused login without a SQLSTATE, so
  the FATAL messages of a refusal (authentication failed, role or database
  missing, no pg_hba.conf entry, no CONNECT privilege) are recognised by
  their text; a server that is down or starting stays transient.
- systemic (block the pipeline and probe; every event would fail): 42P01
  undefined table, 42703 undefined column, 42501 insufficient privilege,
  42P10 key columns without a unique index, 28 invalid authorization
  (authentication failed), 3D000 database does not exist, 3F000 schema does
  not exist.
- permanent (dead-letter): 22 data exception (bad value), 23 integrity
  constraint (not null, unique, check, foreign key), other 42 syntax or
  access rule errors, and anything else.
"""

from __future__ import annotations

import psycopg

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

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
# libpq's FATAL texts of a refused login (the server's own messages, stable across versions).
_REFUSED_LOGIN = (
    "password authentication failed",
    "authentication failed for user",
    "does not exist",  # role "x" / database "x"
    "no pg_hba.conf entry",
    "permission denied for database",
    "must have connect privilege",
)
_SYSTEMIC = frozenset({"42P01", "42703", "42501", "42P10", "3D000", "3F000"})
_SYSTEMIC_CLASSES = ("28",)
# Errors after which the session is gone, so the sink connects again on the next write.
_LOST = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})

_HINTS = {
    "42P01": "the table does not exist; create it or set create_tables: true",
    "42703": "a column does not exist; add it, or set evolve: add_columns",
    "42501": "the sink's user lacks a privilege; grant it (INSERT, UPDATE, DELETE, TRUNCATE on the table)",
    "42P10": "the key columns have no unique index; declare a primary key or unique index, or fix keys:",
    "28000": "the server refused the sink's user; check the user, password and pg_hba.conf",
    "28P01": "password authentication failed; check the password in the DSN",
    "3D000": "the database does not exist; create it or fix the DSN",
    "3F000": "the schema does not exist; create it or fix tables:",
    "23502": "a NOT NULL column got no value (an update inserting a missing row only knows the event's fields)",
}


def classify(exc: BaseException, where: str) -> tuple[DeliveryError, bool]:
    """The tidesync error for ``exc``, and whether the connection is lost."""
    state = getattr(exc, "sqlstate", None)
    detail = _detail(exc)
    if state is None:
        refused = isinstance(exc, psycopg.OperationalError) and "FATAL" in str(exc)
        if refused and any(text in detail for text in _REFUSED_LOGIN):
            return SystemicError(f"{where} refused the login: {detail}"), True
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
    if state in _SYSTEMIC or state[:2] in _SYSTEMIC_CLASSES:
        return SystemicError(f"{where} refused the batch [{state}]: {detail}{suffix}"), state[:2] == "28"
    return PermanentError(f"{where} rejected the batch [{state}]: {detail}{suffix}"), False


def _detail(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
