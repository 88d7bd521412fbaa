"""PyMySQL errors -> tidesync errors, for the MariaDB/MySQL sink: the one place they are translated.

By server error number (PyMySQL does not expose the SQLSTATE):

- transient (retry): 1205 lock wait timeout, 1213 deadlock, 1020/1412
  row or table changed under a consistent read, 1040 too many connections,
  1053/1077/1078/1079 server shutdown, 1927 connection killed, 1317 query
  interrupted, 2002/2003/2006/2013/2055 connection refused or lost, 1021 disk
  full, 1030 storage engine error; and socket errors.
- systemic (block the pipeline and probe; every event would fail): 1146
  missing table, 1054 unknown column, 1049 unknown database,
  1044/1045/1142/1143/1227 access denied.
- permanent (dead-letter): everything else, such as 1406 data too long, 1264
  out of range, 1265/1366/1292 bad value, 1048/1364 missing NOT NULL value,
  1062 duplicate key, 1451/1452 foreign key, 3819/4025 CHECK constraint.

Values the server would round without an error. Even in strict mode MariaDB
(10.11, measured) stores 1.235 in a DECIMAL(10,2) column as 1.24 with only a
note (1265), 2.5 in an INT column as 3 with nothing at all, and cuts
12:00:00.7 in a DATETIME(0) column to 12:00:00 with nothing at all. The sink
knows each destination column's type, so :func:`exact_check` makes a check per
such column and :func:`check_rows` fails the batch with a PermanentError
naming the table, column and value before anything is sent (the engine's
dead-letter wrapper then isolates the event). Too-long strings, out-of-range
numbers and zero dates the server refuses itself in the sink's SQL mode.
"""

from __future__ import annotations

import pymysql

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

_TRANSIENT = {
    1205: "lock wait timeout",
    1213: "deadlock",
    1020: "row changed under a consistent read",
    1412: "table definition changed under a consistent read",
    1040: "too many connections",
    1021: "disk full",
    1030: "storage engine error",
    1317: "query interrupted",
}
_LOST = {
    1053: "the server is shutting down",
    1077: "the server is shutting down",
    1078: "the server is shutting down",
    1079: "the server is shutting down",
    1927: "the connection was killed",
    2002: "cannot connect",
    2003: "cannot connect",
    2006: "the server has gone away",
    2013: "the connection was lost",
    2055: "the connection was lost",
}
_SYSTEMIC = frozenset({1146, 1054, 1049, 1044, 1045, 1142, 1143, 1227})
_HINTS = {
    1146: "the table does not exist; create it or set create_tables: true",
    1054: "a column does not exist; add it, or set evolve: add_columns",
    1044: "the sink's user lacks a privilege; grant INSERT, UPDATE, DELETE on the table",
    1045: "access denied; check the user and password in the DSN",
    1142: "the sink's user lacks a privilege; grant INSERT, UPDATE, DELETE on the table",
    1143: "the sink's user lacks a privilege on a column; grant it",
    1227: "the sink's user lacks a privilege; grant it",
    1049: "the database does not exist; create it or fix the DSN",
    1406: "a value is too long for its column",
    1264: "a value is out of its column's range",
    1048: "a NOT NULL column got NULL",
    1364: "a NOT NULL column without default got no value (an update inserting a missing row "
    "only knows the event's fields)",
    4025: "a CHECK constraint rejects a row",
    3819: "a CHECK constraint rejects a row",
}


def classify(exc: BaseException, where: str) -> tuple[DeliveryError, bool]:
    """The tidesync error for ``exc``, and whether the connection is lost."""
    if isinstance(exc, OSError):
        return TransientError(f"connection to {where} lost or refused: {exc}; will reconnect"), True
    if isinstance(exc, pymysql.err.InterfaceError):
        return TransientError(f"connection to {where} is closed: {exc}; will reconnect"), True
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    code = args[0] if args and isinstance(args[0], int) else None
    message = str(args[1]) if len(args) > 1 else str(exc)
    if code in _LOST:
        return TransientError(f"{_LOST[code]} ({where}) [{code}]: {message}; will reconnect"), True
    if code in _TRANSIENT:
        return TransientError(f"{_TRANSIENT[code]} in {where} [{code}]: {message}"), False
    if code is None and isinstance(exc, pymysql.err.OperationalError):
        return TransientError(f"connection to {where} failed: {message}; will reconnect"), True
    if isinstance(exc, pymysql.err.MySQLError) or code is not None:
        hint = _HINTS.get(code or 0)
        if hint is None and code in (1265, 1366, 1292, 1367, 1411, 3140):
            hint = "a value does not fit its column's type"
        suffix = f" ({hint})" if hint else ""
        if code in _SYSTEMIC:
            return SystemicError(f"{where} refused the batch [{code}]: {message}{suffix}"), code in (1045, 1049)
        return PermanentError(f"{where} rejected the batch [{code}]: {message}{suffix}"), False
    return PermanentError(f"writing to {where} failed: {type(exc).__name__}: {exc}"), False
