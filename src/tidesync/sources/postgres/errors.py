"""Driver errors -> tidesync errors, for the Postgres source: the one place they are translated.

The source talks to Postgres through two drivers: psycopg 3 (catalog reads,
setup, snapshots, ops) and psycopg2 (the replication connection, which
psycopg 3 does not offer). Both are judged here, by the same rules:

- The verdict comes from the SQL sinks' translation
  (:func:`tidesync.sinks.sql.postgres_errors.classify`), so a SQLSTATE means the
  same thing to every part of tidesync: connection exceptions (class 08),
  shutdowns and cancels (57P01-57P05, 57014), serialization failures and
  deadlocks, lock timeouts, insufficient resources (53) and system errors (58)
  are transient; a refused login (class 28, or libpq's FATAL texts), a missing
  database, schema, table or column, and missing privileges are not; an error
  without a SQLSTATE that the driver raises for a broken connection
  (OperationalError, InterfaceError) or an OSError is transient.
- Two SQLSTATEs mean something else to a replication client, and are
  overridden: 55006 (object in use: the slot is still held by a walsender
  that has not exited yet) is transient, and 58P01 (undefined file: the WAL
  the slot needs was removed) is permanent, since that WAL never returns.
- libpq reports a replication stream the server ended (a shutdown ends the
  COPY before it closes the connection) without a SQLSTATE, as a plain
  DatabaseError ("no COPY in progress"): recognised by its text, transient,
  like any other end of the stream.
- A transient verdict becomes :class:`~tidesync.errors.SourceTransientError`
  (reconnect and retry); any other becomes :class:`~tidesync.errors.SourceError`.

The default for an error nobody classified (an unfamiliar SQLSTATE, a
driver error raised before reaching the server, any other exception) is
*permanent*: the pipeline stops and says why. For a source there is no
smaller step than stopping (no event to park), but retrying an unknown error
forever hides it behind a "retrying" status while nothing moves, and an error
that is really passing costs one restart. The failures that do pass in
practice, a lost connection and a server restart, are recognised explicitly
above, so the default is only met by errors that need a person anyway.
"""

from __future__ import annotations

import psycopg
import psycopg2

from tidesync.errors import SourceError, SourceTransientError, TransientError
from tidesync.sinks.sql.postgres_errors import classify as classify_sqlstate

# SQLSTATEs whose meaning differs for a replication client (see the module docstring).
_TRANSIENT = {"55006": "the replication slot is still in use by another process"}
_PERMANENT = {"58P01": "the WAL this slot needs was removed"}
# libpq's texts (no SQLSTATE) for a replication stream that ended under the client.
# The second: the walsender was killed mid-stream and libpq got no error message with the end of the copy.
_STREAM_ENDED = ("no COPY in progress", "PGRES_COPY_BOTH and no message from the libpq")


class _Coded(Exception):
    """A psycopg2 error as the SQLSTATE rules see it: its code and its text."""

    def __init__(self, sqlstate: str, text: str) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


def _as_psycopg(exc: BaseException) -> BaseException:
    """A psycopg2 error in the shape of a psycopg 3 one (same SQLSTATE or same error class)."""
    if not isinstance(exc, psycopg2.Error):
        return exc
    text = str(exc).strip()
    if exc.pgcode:
        return _Coded(exc.pgcode, text)
    if isinstance(exc, psycopg2.OperationalError):
        return psycopg.OperationalError(text)
    if isinstance(exc, psycopg2.InterfaceError):
        return psycopg.InterfaceError(text)
    return psycopg.DatabaseError(text)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg or psycopg2 error, if the server sent one."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def is_transient(exc: BaseException) -> bool:
    """Would retrying (after reconnecting) plausibly succeed? See the module docstring."""
    if isinstance(exc, SourceError):
        return isinstance(exc, SourceTransientError)
    state = sqlstate(exc)
    if state in _TRANSIENT:
        return True
    if state in _PERMANENT:
        return False
    if state is None and isinstance(exc, psycopg2.Error) and any(t in str(exc) for t in _STREAM_ENDED):
        return True
    if not isinstance(exc, psycopg.Error | psycopg2.Error | OSError):
        return False  # the default: see the module docstring
    verdict, _lost = classify_sqlstate(_as_psycopg(exc), "the source database")
    return isinstance(verdict, TransientError)


def translate(exc: BaseException, doing: str) -> SourceError:
    """``exc`` as the tidesync error the source raises, its message starting with ``doing``.

    A :class:`SourceError` passes through unchanged (it was translated already).
    """
    if isinstance(exc, SourceError):
        return exc
    state = sqlstate(exc)
    text = str(exc).strip() or type(exc).__name__
    why = _TRANSIENT.get(state or "") or _PERMANENT.get(state or "")
    message = f"{doing}: {text}" + (f" ({why})" if why else "")
    if is_transient(exc):
        return SourceTransientError(message)
    return SourceError(message)
