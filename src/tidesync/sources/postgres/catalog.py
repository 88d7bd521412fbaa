"""Catalog lookups over a normal connection (psycopg 3): type rows, keys, and tables for snapshots.

Also the one place that knows the session settings every tidesync Postgres
session uses, so that text values are always in the forms ``types.py`` parses.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo as _conninfo
from psycopg import sql

from tidesync.clock import Clock
from tidesync.errors import SourceError
from tidesync.retry import Failure, RetryPolicy
from tidesync.sources.postgres.errors import is_transient, translate
from tidesync.sources.postgres.pgoutput import Relation, RelationColumn
from tidesync.sources.postgres.relation import RelationFacts
from tidesync.sources.postgres.types import TypeInfo, TypeMap

T = TypeVar("T")

log = logging.getLogger("tidesync.sources.postgres")

SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1"
)

# Postgres encoding names -> Python codecs (text columns are sent in the database encoding)
ENCODINGS = {
    "UTF8": "utf-8",
    "SQL_ASCII": "utf-8",
    "LATIN1": "latin-1",
    "LATIN2": "iso8859-2",
    "LATIN9": "iso8859-15",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "EUC_JP": "euc_jp",
    "SJIS": "shift_jis",
    "GBK": "gbk",
    "UHC": "cp949",
    "BIG5": "big5",
    "KOI8R": "koi8-r",
}


def session_dsn(dsn: str, **extra: Any) -> str:
    """``dsn`` with tidesync's session options appended to any the user gave."""
    params = _conninfo.conninfo_to_dict(dsn)
    options = params.get("options")
    params["options"] = f"{options} {SESSION_OPTIONS}" if options else SESSION_OPTIONS
    params.update(extra)
    return _conninfo.make_conninfo("", **params)


class Catalog:
    """The source's connection for catalog reads, reconnected when lost.

    ``run(fn)`` calls ``fn(connection)``; after a transient failure (see
    ``errors.py``: a lost connection, a server restart) the connection is
    reopened and ``fn`` retried on ``policy``. Raises the translated error of
    the last attempt when the policy gives up, or at once for any other error.
    """

    def __init__(self, dsn: str, clock: Clock, policy: RetryPolicy) -> None:
        self.dsn = dsn
        self.clock = clock
        self.policy = policy
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        try:
            async for attempt in self.policy.attempts(self.clock, is_transient, on_retry=self._lost):
                with attempt:
                    if self.conn is None or self.conn.closed:
                        self.conn = await connect(self.dsn)
                    return await fn(self.conn)
        except psycopg.Error as exc:
            raise translate(exc, "cannot read the catalog") from exc
        raise AssertionError("the retry loop ends with a result or an error")

    async def _lost(self, failure: Failure) -> None:
        log.warning("catalog connection: %s; retrying in %.1fs", failure.error, failure.delay)
        await self.close()

    async def resolve(self, rel: Relation, types: TypeMap) -> RelationFacts:
        """Load the type rows ``rel``'s columns need into ``types``; return its key facts."""

        async def lookup(conn: psycopg.AsyncConnection[Any]) -> RelationFacts:
            await load_types(conn, types, types.missing([c.type_oid for c in rel.columns]))
            return (await relation_facts(conn, [rel.oid])).get(rel.oid, RelationFacts())

        return await self.run(lookup)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None


async def connect(dsn: str, *, autocommit: bool = True) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(session_dsn(dsn), autocommit=autocommit)
    except psycopg.Error as exc:
        raise translate(exc, "cannot connect to the source database") from exc


_TYPES_SQL = """
WITH RECURSIVE t(oid) AS (
    SELECT unnest(%s::int8[])::oid
  UNION
    SELECT x.o FROM t JOIN pg_type p ON p.oid = t.oid,
        LATERAL (VALUES (p.typbasetype), (p.typelem)) AS x(o)
    WHERE x.o <> 0
)
SELECT p.oid::int8, n.nspname, p.typname,
       CASE WHEN p.typtype = 'd' THEN 'd' WHEN p.typoutput = 'array_out'::regproc THEN 'a'
            ELSE p.typtype::text END,
       p.typbasetype::int8, p.typelem::int8, p.typdelim::text
FROM pg_type p JOIN pg_namespace n ON n.oid = p.typnamespace
WHERE p.oid IN (SELECT oid FROM t)
"""

_FACTS_SQL = """
SELECT c.oid::int8,
  coalesce((SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
            FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
  coalesce((SELECT array_agg(a.attname::text) FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull), '{}'),
  coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
  coalesce((SELECT array_agg(a.attnum::int ORDER BY a.attnum) FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'),
  coalesce((SELECT array_agg(ARRAY[a.attname::text, d.adbin::text, pg_get_expr(d.adbin, d.adrelid),
                                   format_type(a.atttypid, a.atttypmod)] ORDER BY a.attnum)
            FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}')
FROM pg_class c WHERE c.oid = ANY(%s::int8[]::oid[])
"""

# Node tags a default may consist of to count as a constant: a literal, possibly coerced to the
# column's type modifier (an implicit cast, funcformat 2) or relabelled (a binary-compatible type).
_CONSTANT_NODES = frozenset({"CONST", "FUNCEXPR", "RELABELTYPE"})
_NODE = re.compile(r"\{(\w+)")
_FUNCFORMAT = re.compile(r":funcformat (\d+)")


def constant_default(adbin: str) -> bool:
    """Is a default (``pg_attrdef.adbin``, the stored node tree) a constant, the same for every row?

    ``now()``, ``nextval(...)``, ``gen_random_uuid()`` and any other function
    call or operator are not; a literal coerced to the column's length or
    precision is.
    """
    tags = set(_NODE.findall(adbin))
    return bool(tags) and tags <= _CONSTANT_NODES and all(f == "2" for f in _FUNCFORMAT.findall(adbin))


async def load_types(conn: psycopg.AsyncConnection[Any], types: TypeMap, oids: set[int]) -> None:
    """Fetch the ``pg_type`` rows for ``oids`` (with domain bases and array elements) into ``types``."""
    if not oids:
        return
    cur = await conn.execute(_TYPES_SQL, (sorted(oids),))
    for oid, nsp, name, kind, base, elem, delim in await cur.fetchall():
        types.add(TypeInfo(oid, nsp, name, kind, base, elem, delim))


async def relation_facts(conn: psycopg.AsyncConnection[Any], oids: list[int]) -> dict[int, RelationFacts]:
    """Key, NOT NULL columns, attnums and constant defaults (as the column's text form) per table."""
    cur = await conn.execute(_FACTS_SQL, (oids,))
    out = {}
    for oid, pk, nn, names, nums, defaults in await cur.fetchall():
        constants = []
        for name, adbin, expr, type_ in defaults:
            if constant_default(adbin):
                value = await conn.execute(
                    sql.SQL("SELECT CAST(({}) AS {})::text").format(sql.SQL(expr), sql.SQL(type_))
                )
                row = await value.fetchone()
                constants.append((name, None if row is None else row[0]))
        out[oid] = RelationFacts(tuple(pk), frozenset(nn), tuple(zip(names, nums, strict=True)), tuple(constants))
    return out


@dataclass(frozen=True, slots=True)
class TableShape:
    """A table as the snapshot reads it: the Relation message pgoutput would send, plus SQL names."""

    relation: Relation
    qualified: str  # quoted schema.table
    cast_types: tuple[str, ...]  # format_type of each column, for casting key text back
    estimated_rows: int


_SHAPE_SQL = """
SELECT c.oid::int8, n.nspname, c.relname, c.relreplident::text, greatest(c.reltuples, 0)::int8,
       format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::int8::oid
"""

_COLUMNS_SQL = """
SELECT a.attname::text, a.atttypid::int8, a.atttypmod, format_type(a.atttypid, NULL),
       a.attnum = ANY(coalesce(
           CASE c.relreplident
             WHEN 'd' THEN (SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             WHEN 'i' THEN (SELECT i.indkey::int2[] FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
             WHEN 'f' THEN ARRAY[a.attnum]
           END, '{}'))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = %s::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""


async def table_shape(conn: psycopg.AsyncConnection[Any], oid: int) -> TableShape:
    cur = await conn.execute(_SHAPE_SQL, (oid,))
    row = await cur.fetchone()
    if row is None:
        raise SourceError(f"table with oid {oid} disappeared")
    _, nsp, name, ident, estimate, qualified = row
    cur = await conn.execute(_COLUMNS_SQL, (oid,))
    cols = []
    casts = []
    for attname, typid, typmod, cast, is_key in await cur.fetchall():
        cols.append(RelationColumn(1 if is_key else 0, attname, typid, typmod))
        casts.append(cast)
    rel = Relation(None, oid, nsp, name, ident, tuple(cols))
    return TableShape(rel, qualified, tuple(casts), estimate)
