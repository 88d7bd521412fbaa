"""The state store, opened by URL.

::

    sqlite:///relative/path.db                  a file relative to the working directory
    sqlite:////abs/path.db                      an absolute path
    path/to/state.db                            a bare path is a SQLite file too
    postgresql://user@host:port/db?schema=NAME  tables in schema NAME (default ``tidesync``)

SQLite URLs take ``?timeout=SECONDS``: how long a write waits for another
process that holds the file's write lock before failing (default 5). Missing
parent folders are created when the store opens. Postgres URLs take libpq
parameters; ``schema`` is tidesync's own and is removed before connecting.

A URL that cannot be used is a :class:`~tidesync.errors.ConfigError`.

The store's interface is split by concern (``Checkpoints``, ``DeadLetterQueue``,
``Shadows``, ``IntakeJournal``, ``KeyValues``, ``PipelineStatuses``,
``StoreLifecycle``; :mod:`tidesync.state.store` says why ``commit`` is on each);
``StateStore`` is all of them.

The backends share a row codec (:mod:`tidesync.state.rows`) and
:func:`redact_url` (:mod:`tidesync.state.url`); they import neither from here,
so this package can open them without an import circle.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tidesync.errors import ConfigError
from tidesync.state.store import (
    Checkpoints,
    DeadLetter,
    DeadLetterFilter,
    DeadLetterQueue,
    Fence,
    IntakeJournal,
    JournalAppend,
    JournalEntry,
    KeyValues,
    Lease,
    Leases,
    NewDeadLetter,
    PipelineStatus,
    PipelineStatuses,
    ShadowRow,
    Shadows,
    StateChanges,
    StateStore,
    StoreLifecycle,
    SupportsCommit,
)
from tidesync.state.url import redact_url

__all__ = [
    "DEFAULT_STATE_URL",
    "Checkpoints",
    "DeadLetter",
    "DeadLetterFilter",
    "DeadLetterQueue",
    "Fence",
    "IntakeJournal",
    "JournalAppend",
    "JournalEntry",
    "KeyValues",
    "Lease",
    "Leases",
    "NewDeadLetter",
    "PipelineStatus",
    "PipelineStatuses",
    "ShadowRow",
    "Shadows",
    "StateChanges",
    "StateStore",
    "StoreLifecycle",
    "SupportsCommit",
    "open_state_store",
    "redact_url",
]

DEFAULT_STATE_URL = "sqlite:///.tidesync/state.db"
DEFAULT_PG_SCHEMA = "tidesync"
DEFAULT_SQLITE_TIMEOUT = 5.0
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def open_state_store(url: str) -> StateStore:
    """Build the store ``url`` names without opening it: call ``await store.open()`` next.

    Raises :class:`ConfigError` for a URL of an unknown kind or with a bad parameter.
    """
    url = url.strip()
    if not url:
        raise ConfigError("the state store URL is empty")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "":
        from tidesync.state.sqlite import SqliteStateStore

        return SqliteStateStore(url, busy_timeout=DEFAULT_SQLITE_TIMEOUT, url=url)
    if scheme == "sqlite":
        from tidesync.state.sqlite import SqliteStateStore

        path, timeout = _parse_sqlite(url)
        return SqliteStateStore(path, busy_timeout=timeout, url=url)
    if scheme in ("postgresql", "postgres"):
        from tidesync.state.postgres import PostgresStateStore

        conninfo, schema = _parse_postgres(url)
        return PostgresStateStore(conninfo, schema=schema)
    raise ConfigError(
        f"unsupported state store URL {redact_url(url)!r}: use sqlite:///path.db, a file path, "
        "or postgresql://user@host:port/db"
    )


def _parse_sqlite(url: str) -> tuple[str, float]:
    rest = url[len("sqlite://") :]
    rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        raise ConfigError(f"bad SQLite state URL {url!r}: expected sqlite:///relative.db or sqlite:////absolute.db")
    path = unquote(rest[1:])
    if not path:
        raise ConfigError(f"bad SQLite state URL {url!r}: no file path")
    timeout = DEFAULT_SQLITE_TIMEOUT
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name != "timeout":
            raise ConfigError(f"unknown parameter {name!r} in SQLite state URL {url!r} (known: timeout)")
        try:
            timeout = float(value)
        except ValueError:
            raise ConfigError(f"bad timeout {value!r} in SQLite state URL {url!r}: expected seconds") from None
        if timeout < 0:
            raise ConfigError(f"bad timeout {value!r} in SQLite state URL {url!r}: must not be negative")
    return path, timeout


def _parse_postgres(url: str) -> tuple[str, str]:
    """Split off ``schema``; default a connect timeout so an unreachable server fails instead of hanging."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_PG_SCHEMA
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name == "schema":
            schema = value
        else:
            kept.append((name, value))
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(
            f"bad schema {schema!r} in Postgres state URL {redact_url(url)!r}: "
            "use letters, digits and underscores (at most 63), not starting with a digit"
        )
    if not any(name == "connect_timeout" for name, _ in kept):
        kept.append(("connect_timeout", "10"))
    return urlunsplit(parts._replace(query=urlencode(kept))), schema
