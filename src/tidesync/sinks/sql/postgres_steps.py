"""How the Postgres sink runs a plan's steps: the statements, chosen by measurement.

``bench/sql_sinks.py --strategies --rows 100000 --db postgres``: 100,000 rows
of a pgbench_accounts-like table, batches of 1,000, one commit per batch,
candidates interleaved batch by batch, each on its own table; rows/s over two
runs on this shared 2-core machine (updates send the key and one field):

==============  ==============  ===========  ================  ==============  ==================
                COPY into temp  executemany  multi-row VALUES  unnest(arrays)  other
==============  ==============  ===========  ================  ==============  ==================
upsert/insert   73k-93k         34k-39k      29k-39k           44k-66k         COPY straight in,
                                                                               savepoint: 114k-147k
update          41k-52k         26k-31k      27k-32k           37k-57k
delete          106k-154k       44k-55k      83k-116k                          = ANY: 142k-236k
==============  ==============  ===========  ================  ==============  ==================

So:

- inserts and snapshot rows are first COPYed straight into the table inside a
  savepoint (new rows need no upsert: the speed of a plain COPY); when a row
  exists already the savepoint is rolled back and the rows go through COPY
  into a temporary staging table (``ON COMMIT DELETE ROWS``, one per table
  and column set, kept for the session) and one ``INSERT ... SELECT ... ON
  CONFLICT (key) DO UPDATE``;
- updates and deletes bind one array per column (binary) and join ``unnest``
  (deletes on a one-column key: ``= ANY``): as fast as staging for updates,
  within noise, in one round trip instead of three, and without a temporary
  table. They fall back to the staging table when an array cannot be sent
  (array-typed columns, mixed Python types in a column);
- a few rows (up to ``SMALL``) use arrays whatever the operation: one round
  trip instead of three;
- updates and deletes send their rows in key order (a step holds each key
  once, so its rows commute): the nested loop then walks the key index in
  order, and two writers over the same keys lock their rows in one order.
  Random-order updates by hand, sorted against not, interleaved: 114k-141k
  against 113k-129k rows/s over three runs (within noise in the sink's bench);
  deletes unchanged.

What is left of an update's cost is the database's own: on a table whose pages
are full (filled by COPY, fillfactor 100), each updated row gets a new version
on another page and a new index entry (no HOT update), and each page first
touched after a checkpoint is logged whole. ``bench/sql_sinks.py`` shows the
sink's update at 0.9 of the best statement by hand; that statement itself runs
at about a third of plain COPY. COPY into a temporary table and ``UPDATE ...
FROM`` it measured no faster than ``unnest`` (``--strategies``, 100,000 rows:
114k against 123k rows/s; deletes: 260k against 431k for ``= ANY``), so it
stays the fallback.

Joins run with ``enable_hashjoin``/``enable_mergejoin`` off (set by the
backend for the session): every join the sink makes is a few thousand keys
against a key index, and without statistics on the staged rows the planner
picks a hash join over a full scan of the target (measured 2.5x slower on a
100,000-row table). Tables whose key has no index get the planner's choice
back for their statements.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, cast

import psycopg
from psycopg import sql

from tidesync.event import DELETE, UPDATE, Key
from tidesync.sinks.sql.exact import Check, check_rows
from tidesync.sinks.sql.plan import APPEND, REKEY, UPSERT, Step
from tidesync.sinks.sql.tables import TableInfo, TableName
from tidesync.sinks.sql.values import Encoder, encode_columns, postgres_encoder

SMALL = 8  # inserts of up to this many rows skip the staging table

# Python types whose arrays cast to a column of this kind; text casts to anything.
_NATURAL: dict[str, frozenset[type]] = {
    "int16": frozenset({int}),
    "int32": frozenset({int}),
    "int64": frozenset({int}),
    "decimal": frozenset({int, Decimal, float}),
    "float32": frozenset({int, float}),
    "float64": frozenset({int, float}),
    "bool": frozenset({bool}),
    "date": frozenset({dt.date}),
    "time": frozenset({dt.time}),
    "timetz": frozenset({dt.time}),
    "timestamp": frozenset({dt.datetime}),
    "timestamptz": frozenset({dt.datetime}),
    "interval": frozenset({dt.timedelta}),
    "uuid": frozenset({uuid.UUID}),
    "bytes": frozenset({bytes}),
}
MAX_STAGES = 64  # staging tables kept per session
_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})
_Q = sql.SQL


def ident(table: TableName) -> sql.Composable:
    """A table's quoted (schema-qualified) name."""
    if table.schema:
        return sql.Identifier(table.schema, table.name)
    return sql.Identifier(table.name)


def idents(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    """Quoted column names, comma-separated."""
    if prefix:
        return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _match(key: Sequence[str], left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(_Q("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k)) for k in key)


def _by_key(rows: list[tuple[Any, ...]], nk: int) -> list[tuple[Any, ...]]:
    """An update or delete step's rows in key order (a step holds each key once: its rows commute).

    The join then walks the key index in order. Keys that do not compare stay in planned order.
    Two keys the database takes as one but Python does not (a case-insensitive key column) were
    never ordered by source position within a step either.
    """
    try:
        return sorted(rows, key=lambda r: r[:nk])
    except TypeError:
        return rows


class PostgresSteps:
    """Runs steps on the backend's connection (``conn()``); owns the session's staging tables.

    ``reset`` when a new session starts; ``committed``/``rolled_back`` after
    each transaction (staging tables created in a rolled-back one are gone).
    """

    def __init__(self, conn: Callable[[], psycopg.AsyncConnection[Any]]) -> None:
        self._c = conn
        # Staging tables by (table, columns, their types): a changed type gets a new one.
        self._stages: dict[tuple[Any, ...], str] = {}
        self._new_stages: list[tuple[Any, ...]] = []
        self._used_stages: set[str] = set()
        self._stage_seq = 0
        self._conflicts: dict[TableName, int] = {}  # tables whose rows existed: batches to stage

    def reset(self) -> None:
        self._stages.clear()
        self._new_stages.clear()
        self._used_stages.clear()

    def committed(self) -> None:
        self._new_stages.clear()
        self._used_stages.clear()

    def rolled_back(self) -> None:
        self._used_stages.clear()
        for key in self._new_stages:  # their CREATE was rolled back
            self._stages.pop(key, None)
        self._new_stages.clear()

    async def run(self, step: Step) -> int:
        if step.kind == UPDATE and not step.set_columns:
            return 0  # nothing to set; the caller checks which rows exist
        if step.kind == REKEY:
            return await self._rekey(step)
        rows = self._encode(step)
        if step.kind in (UPDATE, DELETE):
            rows = _by_key(rows, len(step.table.key))
        if step.kind in (UPDATE, DELETE) or len(rows) <= SMALL:
            columns = [list(c) for c in zip(*rows, strict=True)]
            if self._arrays_ok(step, columns):
                return await self._plain_join(step, lambda: self._run_arrays(step, columns))
        if step.kind in (UPSERT, APPEND) and await self._copy_direct(step, rows):
            return len(rows)
        return await self._plain_join(step, lambda: self._run_staged(step, rows))

    async def _plain_join(self, step: Step, statement: Callable[[], Awaitable[int]]) -> int:
        """Run ``statement``, letting the planner hash-join when the key has no index to look rows up by."""
        if step.table.key_indexed or step.kind not in (UPDATE, DELETE):
            return await statement()
        conn = self._c()
        await conn.execute("SET LOCAL enable_hashjoin = on")
        found = await statement()
        # On failure the transaction is rolled back, and SET LOCAL with it.
        await conn.execute("SET LOCAL enable_hashjoin = off")
        return found

    async def _copy_direct(self, step: Step, rows: list[tuple[Any, ...]]) -> bool:
        """COPY new rows straight into the table: the speed of a plain COPY.

        An upsert of rows that do not exist yet is an insert. When one does
        exist (a replayed or repeated snapshot, say), the COPY fails on the key,
        is rolled back to its savepoint, and the caller stages the rows instead;
        the table is then not tried directly for its next few batches.
        """
        name = step.table.name
        skip = self._conflicts.get(name, 0)
        if skip:
            self._conflicts[name] = skip - 1
            return False
        conn = self._c()
        await conn.execute("SAVEPOINT tidesync_copy")
        try:
            copy_sql = _Q("COPY {} ({}) FROM STDIN").format(ident(name), idents(step.columns))
            async with conn.cursor().copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            await conn.execute("ROLLBACK TO SAVEPOINT tidesync_copy")
            self._conflicts[name] = 8
            return False
        await conn.execute("RELEASE SAVEPOINT tidesync_copy")
        return True

    def _encode(self, step: Step) -> list[tuple[Any, ...]]:
        """The step's rows, each value encoded for its destination column.

        psycopg adapts nearly every value itself, so only JSON columns, and
        text columns given dicts or lists, are encoded (as JSON text).
        """
        info = step.table.columns
        rows = step.rows
        todo: list[tuple[int, Encoder]] = []
        for j, name in enumerate(step.columns):
            col = info.get(name)
            if col is None:
                continue
            enc = postgres_encoder(col.kind)
            if enc is None:
                continue
            if col.kind == "json" or not _CONTAINERS.isdisjoint({type(r[j]) for r in rows}):
                todo.append((j, enc))
        out = encode_columns(rows, todo) if todo else rows
        checks = cast(dict[str, Check], step.table.extra.get("checks") or {})
        if checks:  # whatever Postgres would round instead of refusing fails here (see postgres.describe)
            check_rows(step.table.name, step.columns, out, checks)
        return out

    @staticmethod
    def _arrays_ok(step: Step, columns: list[list[Any]]) -> bool:
        """Whether each column's values make one array that casts to the column (else: COPY, which parses text)."""
        info = step.table.columns
        for name, values in zip(step.columns, columns, strict=True):
            col = info.get(name)
            if col is None or col.kind == "array" or col.cast is None:
                return False
            types = {type(v) for v in values if v is not None}
            if len(types) > 1 or (types and str not in types and not types <= _NATURAL.get(col.kind, frozenset())):
                return False
        return True

    def _unnest(self, step: Step, names: Sequence[str]) -> sql.Composable:
        info = step.table.columns
        arrays = sql.SQL(", ").join(_Q("%b::{}[]").format(sql.SQL(info[n].cast or "text")) for n in names)
        return _Q("unnest({}) AS _s({})").format(arrays, idents(names))

    async def _run_arrays(self, step: Step, columns: list[list[Any]]) -> int:
        t = ident(step.table.name)
        key = step.table.key
        if step.kind == DELETE:
            if len(key) == 1:
                cast = sql.SQL(step.table.columns[key[0]].cast or "text")
                query = _Q("DELETE FROM {} WHERE {} = ANY(%b::{}[])").format(t, sql.Identifier(key[0]), cast)
            else:
                query = _Q("DELETE FROM {} AS _d USING {} WHERE {}").format(
                    t, self._unnest(step, step.columns), _match(key, "_d", "_s")
                )
        elif step.kind == UPDATE:
            query = _Q("UPDATE {} AS _d SET {} FROM {} WHERE {}").format(
                t, self._set(step.set_columns, "_s"), self._unnest(step, step.columns), _match(key, "_d", "_s")
            )
        else:
            query = _Q("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT * FROM {}{}").format(
                t, idents(step.columns), self._unnest(step, step.columns), self._conflict(step)
            )
        cur = await self._c().execute(query, columns)
        return cur.rowcount

    async def _run_staged(self, step: Step, rows: list[tuple[Any, ...]]) -> int:
        stage = sql.Identifier(await self._stage(step, rows))
        t = ident(step.table.name)
        key = step.table.key
        if step.kind == DELETE:
            query = _Q("DELETE FROM {} AS _d USING {} AS _s WHERE {}").format(t, stage, _match(key, "_d", "_s"))
        elif step.kind == UPDATE:
            query = _Q("UPDATE {} AS _d SET {} FROM {} AS _s WHERE {}").format(
                t, self._set(step.set_columns, "_s"), stage, _match(key, "_d", "_s")
            )
        else:
            query = _Q("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}{}").format(
                t, idents(step.columns), idents(step.columns), stage, self._conflict(step)
            )
        cur = await self._c().execute(query)
        return cur.rowcount

    async def _stage(self, step: Step, rows: list[tuple[Any, ...]]) -> str:
        """COPY the rows into the staging table of this table and column set."""
        conn = self._c()
        info = step.table.columns
        skey = (step.table.name, step.columns, tuple(info[c].native for c in step.columns))
        name = self._stages.get(skey)
        if name is None:
            if len(self._stages) >= MAX_STAGES:
                old_key = next(iter(self._stages))
                await conn.execute(_Q("DROP TABLE IF EXISTS {}").format(sql.Identifier(self._stages.pop(old_key))))
            self._stage_seq += 1
            name = f"_tidesync_stage_{self._stage_seq}"
            await conn.execute(
                _Q("CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA").format(
                    sql.Identifier(name), idents(step.columns), ident(step.table.name)
                )
            )
            self._stages[skey] = name
            self._new_stages.append(skey)
        elif name in self._used_stages:
            await conn.execute(_Q("DELETE FROM {}").format(sql.Identifier(name)))
        self._used_stages.add(name)
        copy_sql = _Q("COPY {} ({}) FROM STDIN").format(sql.Identifier(name), idents(step.columns))
        async with conn.cursor().copy(copy_sql) as copy:
            for row in rows:
                await copy.write_row(row)
        return name

    @staticmethod
    def _set(names: Sequence[str], source: str) -> sql.Composable:
        return sql.SQL(", ").join(_Q("{} = {}").format(sql.Identifier(n), sql.Identifier(source, n)) for n in names)

    def _conflict(self, step: Step) -> sql.Composable:
        if step.kind == APPEND:
            return sql.SQL("")
        assert step.kind == UPSERT
        key = step.table.key
        rest = step.set_columns
        if not rest:
            return _Q(" ON CONFLICT ({}) DO NOTHING").format(idents(key))
        return _Q(" ON CONFLICT ({}) DO UPDATE SET {}").format(idents(key), self._set(rest, "excluded"))

    async def _rekey(self, step: Step) -> int:
        key = step.table.key
        row = list(self._encode(step)[0])
        query = _Q("UPDATE {} SET {} WHERE {}").format(
            ident(step.table.name),
            sql.SQL(", ").join(_Q("{} = %s").format(sql.Identifier(n)) for n in step.columns),
            sql.SQL(" AND ").join(_Q("{} = %s").format(sql.Identifier(k)) for k in key),
        )
        cur = await self._c().execute(query, [*row, *self._encode_key(step.table, step.old_keys[0])])
        return cur.rowcount

    async def missing(self, table: TableInfo, keys: Sequence[Key]) -> list[int]:
        out: list[int] = []
        names = table.key
        casts = [sql.SQL(table.columns[k].cast or "text") for k in names]
        one = _Q("({})").format(sql.SQL(", ").join([sql.SQL("%s::integer"), *(_Q("%s::{}").format(c) for c in casts)]))
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = _Q(
                "SELECT _s.i FROM (VALUES {}) AS _s(i, {}) WHERE NOT EXISTS (SELECT 1 FROM {} AS _d WHERE {})"
            ).format(
                sql.SQL(", ").join([one] * len(chunk)), idents(names), ident(table.name), _match(names, "_d", "_s")
            )
            params = [v for i, k in enumerate(chunk) for v in (start + i, *self._encode_key(table, k))]
            cur = await self._c().execute(query, params)
            out.extend(r[0] for r in await cur.fetchall())
        return sorted(out)

    @staticmethod
    def _encode_key(table: TableInfo, key: Key) -> list[Any]:
        out = []
        for name, v in zip(table.key, key, strict=True):
            enc = postgres_encoder(table.columns[name].kind)
            out.append(enc(v) if enc is not None else v)
        return out
