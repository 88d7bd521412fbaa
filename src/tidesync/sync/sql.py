"""The SQL endpoint of a sync: conditional writes to Postgres, MariaDB/MySQL or SQLite through SQLAlchemy Core.

Every field write is ``UPDATE t SET c = :new WHERE <key> AND c IS NOT
DISTINCT FROM :expected`` (SQLAlchemy renders the null-safe comparison per
dialect: ``IS NOT DISTINCT FROM``, ``<=>``, ``IS``), so a value changed in the
table since the sync last saw it is never overwritten. A record's fields go
in one statement first; when it matches no row, each field is tried alone
and the row read back, so every field gets its own outcome (see
:mod:`.endpoint`). One :meth:`SqlEndpoint.apply` call is one transaction; a
statement the database rejects for good (constraint, bad value) makes the
call run again op by op, each in its own transaction, so only that op fails.

MariaDB whose binlog the side's source reads: with ``origin`` set, every
session runs ``SET SESSION skip_replication = 1`` when it connects, so the
binlog events of the sync's writes carry a flag the source reports as that
origin (:mod:`tidesync.sources.mariadb.marker` says why this mark). MySQL has
no such flag: there ``origin`` must be None, and echoes are known by value.

Postgres: writes run under a replication origin (``origin``), created once
with ``pg_replication_origin_create`` and attached to the endpoint's single
session with ``pg_replication_origin_session_setup``. The change events of
those transactions carry the origin's name, which is how the sync knows its
own writes. These functions need superuser, or EXECUTE granted on them
(``GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text),
pg_replication_origin_session_setup(text), pg_replication_origin_oid(text) TO
the_user``). An origin can be attached to one session at a time (PostgreSQL
15), so the endpoint keeps exactly one connection.

A blocking driver runs on one worker thread; values are bound without
SQLAlchemy types, so they pass through as the driver reads them (JSON values
on Postgres are wrapped for their column's type).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tidesync.errors import PermanentError, TransientError
from tidesync.event import Key, Row
from tidesync.sources.polling.dialect import TableMeta, close_engine, create_engine, redact, reflect
from tidesync.sources.polling.query import key_in, lit, tuple_gt
from tidesync.sync.endpoint import DeleteOp, FieldWrite, InsertOp, Op, OpResult, UpdateOp
from tidesync.sync.record import same

log = logging.getLogger("tidesync.sync")
T = TypeVar("T")


def classify(exc: BaseException, where: str) -> TransientError | PermanentError:
    """A SQLAlchemy error as a tidesync error: lost connections, deadlocks and timeouts are transient."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    if getattr(exc, "connection_invalidated", False) or isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)
    ):
        return TransientError(f"{where}: {detail}")
    return PermanentError(f"{where}: {detail}")


class SqlEndpoint:
    def __init__(
        self,
        dsn: str,
        table: str,
        key: Sequence[str],
        *,
        origin: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.table_name = table
        self.key = tuple(key)
        self.origin = origin
        self.connect_timeout = connect_timeout
        self._exec: ThreadPoolExecutor | None = None
        self._engine: sa.Engine | None = None
        self.meta: TableMeta | None = None
        self._json: dict[str, str] = {}  # Postgres json/jsonb columns -> type
        self.where = f"{table} in {redact(dsn)}"

    # --- lifecycle ------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._exec is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)
        except sa_exc.SQLAlchemyError as exc:
            raise classify(exc, self.where) from exc

    async def open(self, *, writes: bool = True) -> None:
        """Connect and read the table's columns.

        ``writes=False`` (a dry run): nothing is changed on the database, so no replication origin is
        created or attached; :meth:`apply` must not be called then.
        """
        if self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="tidesync-sync-sql")
        if self._engine is None:
            # One pooled connection, used by one worker thread: on Postgres the origin is attached to it.
            self._engine = create_engine(self.dsn, connect_timeout=self.connect_timeout)
            if writes and self._engine.dialect.name == "postgresql" and self.origin:
                await self._run(self._create_origin)
                await self._run(self._engine.dispose)  # every session from now on gets the origin
                sa.event.listen(self._engine, "connect", self._attach_origin)
            elif writes and self._engine.dialect.name in ("mysql", "mariadb") and self.origin:
                sa.event.listen(self._engine, "connect", self._mark_session)  # before the first connection
        self.meta = await self._run(reflect, self._engine, self.table_name)
        missing = [c for c in self.key if c not in self.meta.columns]
        if missing:
            raise PermanentError(f"{self.where}: no key column(s) {', '.join(missing)}")
        if self._engine.dialect.name == "postgresql":
            self._json = {c.name: (c.native or "").upper() for c in self.meta.portable if c.type == "json"}

    def _create_origin(self) -> None:
        assert self._engine is not None
        with self._engine.begin() as conn:
            oid = conn.execute(sa.text("SELECT pg_replication_origin_oid(:n)"), {"n": self.origin}).scalar()
            if oid is None:
                conn.execute(sa.text("SELECT pg_replication_origin_create(:n)"), {"n": self.origin})
                log.info("created replication origin %s", self.origin)

    def _attach_origin(self, dbapi_conn: Any, _record: Any) -> None:
        # A process that died a moment ago may still hold the origin: give its session a few seconds to end.
        # A plain loop, not RetryPolicy.attempts (async): a pool connect event runs synchronously on the DB thread.
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with dbapi_conn.cursor() as cur:
                    cur.execute("SELECT pg_replication_origin_session_setup(%s)", (self.origin,))
                dbapi_conn.commit()
                return
            except Exception as exc:
                dbapi_conn.rollback()
                if "already active" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _mark_session(self, dbapi_conn: Any, _record: Any) -> None:
        # MariaDB: every binlog event this session writes carries the skip_replication flag, which the
        # binlog source reports as the origin (see tidesync.sources.mariadb.marker). Set outside a transaction.
        from tidesync.sources.mariadb.marker import SESSION_SETUP

        try:
            with dbapi_conn.cursor() as cur:
                cur.execute(SESSION_SETUP)
        except Exception as exc:
            code = exc.args[0] if exc.args else None
            if code in (1193, 1227):  # unknown variable (MySQL), access denied (SUPER, before MariaDB 10.5.2)
                raise PermanentError(
                    f"{self.where}: cannot mark the sync's writes ({SESSION_SETUP}: {exc}); on MySQL use a "
                    "type: mysql source, whose echoes are known by value; on MariaDB before 10.5.2 grant SUPER"
                ) from exc
            raise

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        executor, self._exec = self._exec, None
        await close_engine(engine, executor)

    # --- helpers ----------------------------------------------------------------------------

    def _t(self) -> sa.TableClause:
        assert self.meta is not None
        return self.meta.table()

    def _bind(self, column: str, value: Any) -> Any:
        kind = self._json.get(column)
        if kind is not None and value is not None and not isinstance(value, str):
            from psycopg.types.json import Json, Jsonb

            return lit(Jsonb(value) if kind == "JSONB" else Json(value))
        return lit(value)

    def _key_where(self, t: sa.TableClause, key: Key) -> list[Any]:
        return [t.c[c] == lit(v) for c, v in zip(self.key, key, strict=True)]

    def _same(self, t: sa.TableClause, column: str, value: Any) -> Any:
        if value is None:
            return t.c[column].is_(None)
        return t.c[column].is_not_distinct_from(self._bind(column, value))

    # --- writes -----------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if not ops:
            return []
        try:
            return await self._run(self._apply_all, ops)
        except PermanentError:
            pass  # find the op the database rejects: each alone, in its own transaction
        out = []
        for op in ops:
            try:
                out.extend(await self._run(self._apply_all, [op]))
            except PermanentError as exc:
                out.append(OpResult("failed", {f.column: "failed" for f in getattr(op, "fields", ())}, error=str(exc)))
        return out

    def _apply_all(self, ops: Sequence[Op]) -> list[OpResult]:
        assert self._engine is not None
        with self._engine.begin() as conn:
            return [self._one(conn, op) for op in ops]

    def _one(self, conn: sa.Connection, op: Op) -> OpResult:
        if isinstance(op, UpdateOp):
            return self._update(conn, op)
        if isinstance(op, InsertOp):
            return self._insert(conn, op)
        return self._delete(conn, op)

    def _update_stmt(self, t: sa.TableClause, key: Key, fields: Sequence[FieldWrite]) -> Any:
        where = self._key_where(t, key)
        where += [self._same(t, f.column, f.expected) for f in fields if f.conditional]
        return sa.update(t).where(*where).values({f.column: self._bind(f.column, f.value) for f in fields})

    def _update(self, conn: sa.Connection, op: UpdateOp) -> OpResult:
        t = self._t()
        if conn.execute(self._update_stmt(t, op.key, op.fields)).rowcount == 1:
            return OpResult("ok", {f.column: "ok" for f in op.fields})
        status: dict[str, str] = {}
        if len(op.fields) > 1:
            for f in op.fields:
                if conn.execute(self._update_stmt(t, op.key, [f])).rowcount == 1:
                    status[f.column] = "ok"
        rest = [f for f in op.fields if f.column not in status]
        row = self._read(conn, t, op.key)
        for f in rest:
            if row is None:
                status[f.column] = "missing"
            else:
                status[f.column] = "already" if same(row.get(f.column), f.value) else "conflict"
        return OpResult("ok" if row is not None else "missing", status)

    def _read(self, conn: sa.Connection, t: sa.TableClause, key: Key) -> Row | None:
        r = conn.execute(sa.select(t).where(*self._key_where(t, key))).mappings().first()
        return dict(r) if r is not None else None

    def _insert(self, conn: sa.Connection, op: InsertOp) -> OpResult:
        t = self._t()
        if op.key is not None:
            row = self._read(conn, t, op.key)
            if row is not None:
                return OpResult("exists", key=op.key, row=row)
        values = {c: self._bind(c, v) for c, v in op.row.items()}
        if op.key is not None:
            conn.execute(sa.insert(t).values(values))
            return OpResult("ok", key=op.key)
        got = conn.execute(sa.insert(t).values(values).returning(*(t.c[c] for c in self.key))).first()
        if got is None:
            raise PermanentError(f"{self.where}: the insert returned no key")
        return OpResult("ok", key=tuple(got))

    def _delete(self, conn: sa.Connection, op: DeleteOp) -> OpResult:
        t = self._t()
        where = self._key_where(t, op.key)
        if op.expected is not None:
            where += [self._same(t, c, v) for c, v in op.expected.items()]
        if conn.execute(sa.delete(t).where(*where)).rowcount == 1:
            return OpResult("ok")
        return OpResult("missing" if self._read(conn, t, op.key) is None else "conflict")

    # --- reads ------------------------------------------------------------------------------

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        if not keys:
            return {}
        return await self._run(self._fetch, list(keys))

    def _fetch(self, keys: list[Key]) -> dict[Key, Row]:
        assert self._engine is not None
        t = self._t()
        out: dict[Key, Row] = {}
        with self._engine.connect() as conn:
            for i in range(0, len(keys), 500):
                q = sa.select(t).where(key_in([t.c[c] for c in self.key], keys[i : i + 500]))
                for r in conn.execute(q).mappings():
                    row = dict(r)
                    out[tuple(row[c] for c in self.key)] = row
        return out

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        return await self._run(self._find, dict(values), limit)

    def _find(self, values: dict[str, Any], limit: int) -> list[tuple[Key, Row]]:
        assert self._engine is not None
        t = self._t()
        q = sa.select(t).where(*(self._same(t, c, v) for c, v in values.items()))
        q = q.order_by(*(t.c[c].desc() for c in self.key)).limit(limit)
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        return [(tuple(r[c] for c in self.key), r) for r in rows]

    async def scan(self, page_size: int = 5000) -> list[Row]:
        return await self._run(self._scan, page_size)

    def _scan(self, page_size: int) -> list[Row]:
        assert self._engine is not None
        t = self._t()
        cols = [t.c[c] for c in self.key]
        out: list[Row] = []
        after: Key | None = None
        with self._engine.connect() as conn:
            while True:
                q = sa.select(t)
                if after is not None:
                    q = q.where(tuple_gt(cols, after))
                rows = [dict(r) for r in conn.execute(q.order_by(*cols).limit(page_size)).mappings()]
                out.extend(rows)
                if len(rows) < page_size:
                    return out
                after = tuple(rows[-1][c] for c in self.key)
