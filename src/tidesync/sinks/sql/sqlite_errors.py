"""sqlite3 errors -> tidesync errors, for the SQLite sink: the one place they are translated.

By SQLite result code (``sqlite_errorname``, Python 3.11+):

- transient (retry): SQLITE_BUSY / SQLITE_LOCKED (another connection holds
  the write lock longer than ``lock_timeout``), SQLITE_IOERR*, SQLITE_FULL,
  SQLITE_PROTOCOL, SQLITE_NOMEM; a closed connection (reconnect).
- systemic (block the pipeline and probe; every event would fail):
  "no such table", "no such column" / "has no column named",
  SQLITE_READONLY*, SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_AUTH.
- permanent (dead-letter): SQLITE_CONSTRAINT* (NOT NULL, UNIQUE, CHECK,
  foreign key), SQLITE_MISMATCH (a value a STRICT table or an INTEGER
  PRIMARY KEY cannot take), SQLITE_TOOBIG, SQLITE_CORRUPT, SQLITE_NOTADB and
  anything else.
"""

from __future__ import annotations

import sqlite3

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

_TRANSIENT_PREFIXES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL", "SQLITE_NOMEM")
_SYSTEMIC_PREFIXES = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_HINTS = {
    "SQLITE_READONLY": "the file is read-only for this process; fix its permissions",
    "SQLITE_CORRUPT": "the database file is corrupt; restore it from a backup",
    "SQLITE_NOTADB": "the file is not a SQLite database; check path:",
    "SQLITE_CANTOPEN": "the file cannot be opened; check path: and its directory",
    "SQLITE_MISMATCH": "a value does not fit its column's type",
    "SQLITE_TOOBIG": "a value is too big",
}


def classify(exc: BaseException, where: str) -> tuple[DeliveryError, bool]:
    """The tidesync error for ``exc``, and whether the connection is lost."""
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        return TransientError(f"connection to {where} is closed; will reconnect"), True
    name = getattr(exc, "sqlite_errorname", None) or ""
    message = str(exc)
    if name.startswith(_TRANSIENT_PREFIXES):
        what = "lock timeout" if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) else "I/O problem"
        return TransientError(f"{what} in {where} [{name}]: {message}"), False
    hint = _HINTS.get(name)
    if hint is None and name.startswith("SQLITE_READONLY"):
        hint = _HINTS["SQLITE_READONLY"]
    low = message.lower()
    systemic = name.startswith(_SYSTEMIC_PREFIXES)
    if hint is None and name.startswith("SQLITE_CONSTRAINT"):
        hint = "a constraint of the destination rejects a row"
    if "no such table" in low:
        systemic = True
        hint = hint or "the table does not exist; create it or set create_tables: true"
    if "no such column" in low or "has no column named" in low:
        systemic = True
        hint = hint or "a column does not exist; add it, or set evolve: add_columns"
    if hint is None and isinstance(exc, sqlite3.InterfaceError):
        hint = "a value of a type SQLite cannot store"
    suffix = f" ({hint})" if hint else ""
    code = f" [{name}]" if name else ""
    if systemic:
        return SystemicError(f"{where} refused the batch{code}: {message}{suffix}"), False
    return PermanentError(f"{where} rejected the batch{code}: {message}{suffix}"), False
