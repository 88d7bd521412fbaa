"""SQLAlchemy Core plumbing shared by SQL polling and reconciliation: URLs, engines, reflection, errors.

One implementation covers Postgres (psycopg 3), MariaDB/MySQL (PyMySQL) and
SQLite (sqlite3). Queries are built on lightweight ``sa.table``/``sa.column``
constructs without SQLAlchemy types, so values come back exactly as the driver
produces them (psycopg: Decimal, aware datetimes, dicts for JSON; PyMySQL:
JSON as text; SQLite: what is stored, e.g. timestamps as text) and are bound
back the same way. That keeps a cursor value read from a row comparable with
the column it came from, whatever its storage format.

Sessions run in UTC (Postgres ``TimeZone``, MariaDB ``time_zone``), so
``timestamptz``/``TIMESTAMP`` values read the same in every run.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tidesync.errors import ConfigError, SourceError, SourceTransientError
from tidesync.schema import Column, EntitySchema

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite+pysqlite",
}


def sqlalchemy_url(dsn: str) -> str:
    """Our DSN forms (``postgresql://``, ``mysql://``, ``mariadb://``, ``sqlite:///``) as SQLAlchemy URLs.

    A URL that already names a driver (``postgresql+psycopg://``) is kept.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ConfigError(f"cannot read DSN {redact(dsn)!r}: expected postgresql://, mysql:// or sqlite:///path")
    s = scheme.lower()
    if "+" in s:
        return dsn
    driver = _DRIVERS.get(s)
    if driver is None:
        raise ConfigError(f"unsupported DSN scheme {scheme!r} (known: postgresql, mysql, mariadb, sqlite)")
    return f"{driver}://{rest}"


def redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


def create_engine(dsn: str, *, connect_timeout: float = 10.0, pool_size: int = 1) -> sa.Engine:
    """An engine with small pool, UTC sessions and a connect timeout; no connection is made yet."""
    url = sa.make_url(sqlalchemy_url(dsn))
    backend = url.get_backend_name()
    args: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "postgresql":
        args = {"connect_timeout": max(1, int(connect_timeout)), "options": "-c TimeZone=UTC"}
    elif backend in ("mysql", "mariadb"):
        args = {"connect_timeout": max(1, int(connect_timeout)), "init_command": "SET time_zone = '+00:00'"}
        if "charset" not in url.query:
            args["charset"] = "utf8mb4"
    elif backend == "sqlite":
        args = {"timeout": connect_timeout, "check_same_thread": False}
    if backend != "sqlite":
        kwargs.update(pool_size=pool_size, max_overflow=1)
    return sa.create_engine(url, connect_args=args, **kwargs)


async def close_engine(engine: sa.Engine | None, executor: ThreadPoolExecutor | None) -> None:
    """Dispose of ``engine`` on the worker thread that used it, then let that thread go.

    Every blocking SQL user (the polling source, reconciliation, two-way sync endpoints) drives one
    engine through one worker thread; its connections are closed on that same thread.
    """
    if engine is not None and executor is not None:
        await asyncio.get_running_loop().run_in_executor(executor, engine.dispose)
    if executor is not None:
        executor.shutdown(wait=False)


def split_table(name: str) -> tuple[str | None, str]:
    schema, dot, table = name.rpartition(".")
    return (schema if dot else None), table


@dataclass(frozen=True, slots=True)
class TableMeta:
    """What reflection found: the column names in table order, the primary key, and the portable schema."""

    schema: str | None
    name: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    portable: tuple[Column, ...]

    def table(self, columns: tuple[str, ...] | None = None) -> sa.TableClause:
        """A lightweight table construct (no SQLAlchemy types: values pass through as the driver makes them)."""
        return sa.table(self.name, *(sa.column(c) for c in (columns or self.columns)), schema=self.schema)

    def entity_schema(self, entity: str, key: tuple[str, ...]) -> EntitySchema:
        return EntitySchema(entity=entity, columns=self.portable, primary_key=key)


def reflect(engine: sa.Engine, table: str) -> TableMeta:
    """Columns and primary key of ``table`` (``schema.table`` or ``table``); raises NoSuchTableError."""
    schema, name = split_table(table)
    with warnings.catch_warnings():
        # A type SQLAlchemy does not know reflects as NullType with a warning; its values pass through anyway.
        warnings.simplefilter("ignore", sa_exc.SAWarning)
        insp = sa.inspect(engine)
        cols = insp.get_columns(name, schema=schema)
        if not cols:
            raise sa_exc.NoSuchTableError(table)
        pk = insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
    portable = tuple(
        _portable_column(c["name"], c["type"], bool(c.get("nullable", True)), engine.dialect) for c in cols
    )
    return TableMeta(schema, name, tuple(c["name"] for c in cols), tuple(pk), portable)


def _portable_column(name: str, type_: Any, nullable: bool, dialect: sa.Dialect) -> Column:
    try:
        native = str(type_.compile(dialect=dialect))
    except sa_exc.SQLAlchemyError:
        native = type(type_).__name__
    kind, extra = portable_type(type_)
    return Column(name, kind, nullable=nullable, native=native, **extra)


def portable_type(type_: Any) -> tuple[str, dict[str, Any]]:
    """A reflected SQLAlchemy type in the portable vocabulary of :mod:`tidesync.schema`."""
    t = sa.types
    name = type(type_).__name__.upper()
    if isinstance(type_, t.Boolean) or (name == "TINYINT" and getattr(type_, "display_width", None) == 1):
        return "bool", {}
    if isinstance(type_, t.SmallInteger) or name in ("TINYINT", "SMALLINT", "MEDIUMINT"):
        return "int16" if name != "MEDIUMINT" else "int32", {}
    if isinstance(type_, t.BigInteger):
        return "int64", {}
    if isinstance(type_, t.Integer):
        return ("int64" if name == "INTEGER" and "SQLITE" in type(type_).__module__.upper() else "int32"), {}
    if isinstance(type_, t.Float) or name in ("REAL", "DOUBLE", "DOUBLE_PRECISION", "FLOAT"):
        if name == "REAL" or (name == "FLOAT" and (getattr(type_, "precision", None) or 53) <= 24):
            return "float32", {}
        return "float64", {}
    if isinstance(type_, t.Numeric):
        return "decimal", {"precision": type_.precision, "scale": type_.scale}
    if isinstance(type_, t.DateTime):
        return ("timestamptz" if type_.timezone else "timestamp"), {}
    if isinstance(type_, t.Date):
        return "date", {}
    if isinstance(type_, t.Time):
        return ("timetz" if getattr(type_, "timezone", False) else "time"), {}
    if isinstance(type_, t.Interval):
        return "interval", {}
    if isinstance(type_, t.Uuid) or name == "UUID":
        return "uuid", {}
    if isinstance(type_, t.JSON) or name in ("JSON", "JSONB"):
        return "json", {}
    if isinstance(type_, t.ARRAY):
        return "array", {}
    if isinstance(type_, t._Binary) or name in ("BYTEA", "BLOB", "LONGBLOB", "BINARY", "VARBINARY"):
        return "bytes", {}
    if isinstance(type_, t.String):
        return "string", ({"length": type_.length} if getattr(type_, "length", None) else {})
    return "unknown", {}


# --- errors ---------------------------------------------------------------------


def translate(exc: BaseException, what: str) -> SourceError:
    """A driver/SQLAlchemy error as a tidesync error: lost connections are transient."""
    if isinstance(exc, sa_exc.NoSuchTableError):
        return SourceError(f"{what}: table {exc} does not exist")
    if isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)
    ):
        return SourceTransientError(f"{what}: {_short(exc)}")
    return SourceError(f"{what}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        raise translate(exc, what) from exc
