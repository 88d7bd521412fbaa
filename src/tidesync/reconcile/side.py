"""Reading one side of a comparison: key boundaries, range hashes, rows; counted and rate-limited.

Every call is one plain SELECT in its own short transaction (a statement sees
one consistent snapshot on all three databases); nothing takes a table lock.
Calls run on one worker thread per side, so a side never has more than one
query in flight. ``rate`` caps the rows a side touches per second (rows
hashed in the database, rows fetched and keys stepped over alike); the limiter
sleeps on the injected clock.

Range hashes in the database (``db`` mode): each row's text is hashed with MD5
and the first 64 bits of the hashes are summed, with the row count:

- Postgres: ``sum(('x' || substr(md5(ROW(cols)::text), 1, 16))::bit(64)::bigint)``
- MariaDB: ``SUM(CAST(CONV(LEFT(MD5(CONCAT_WS(CHAR(31), QUOTE(col)...)), 16), 16, 10) AS UNSIGNED))``

A sum needs no ORDER BY inside the aggregate (no sort, and no
``group_concat_max_len`` ceiling on MariaDB, which an ordered GROUP_CONCAT of
a whole chunk would hit) and is exact (numeric/DECIMAL sums). SQLite has no
MD5, so SQLite sides always hash in Python.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceTransientError
from tidesync.event import Key, Row
from tidesync.reconcile.target import Side
from tidesync.retry import RetryPolicy
from tidesync.sinks.sql import values as sink_values
from tidesync.sources.polling import query
from tidesync.sources.polling.dialect import close_engine, create_engine, redact, translate
from tidesync.sources.polling.estimate import row_estimate

T = TypeVar("T")
READ_RETRY = RetryPolicy(initial_delay=1.0, max_delay=8.0, jitter="none", max_attempts=4)  # 1, 2, 4 s


@dataclass
class Counters:
    rows_hashed: int = 0  # rows the database hashed for us (not sent)
    rows_fetched: int = 0  # rows sent to us
    keys_stepped: int = 0  # index entries stepped over to find chunk boundaries
    queries: int = 0

    @property
    def rows_read(self) -> int:
        return self.rows_hashed + self.rows_fetched

    def as_dict(self) -> dict[str, int]:
        return {
            "rows_hashed": self.rows_hashed,
            "rows_fetched": self.rows_fetched,
            "keys_stepped": self.keys_stepped,
            "queries": self.queries,
        }


class RateLimit:
    """At most ``rate`` units per second on average (no limit when None)."""

    def __init__(self, rate: float | None, clock: Clock) -> None:
        self.rate = rate
        self.clock = clock
        self._free_at = 0.0

    async def spend(self, units: int) -> None:
        if not self.rate or units <= 0:
            return
        now = self.clock.monotonic()
        self._free_at = max(self._free_at, now) + units / self.rate
        delay = self._free_at - now
        if delay > 0:
            await self.clock.sleep(delay)


def _row_hash_sql(dialect: sa.Dialect, columns: Sequence[str]) -> str:
    q = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        return f"('x' || substr(md5(ROW({', '.join(q(c) for c in columns)})::text), 1, 16))::bit(64)::bigint"
    if dialect.name in ("mysql", "mariadb"):
        parts = ", ".join(f"QUOTE({q(c)})" for c in columns)
        return f"CAST(CONV(LEFT(MD5(CONCAT_WS(CHAR(31), {parts})), 16), 16, 10) AS UNSIGNED)"
    raise ValueError(f"no database-side row hash for {dialect.name}")


def key_binder(dialect: str, kinds: Sequence[str]) -> Callable[[Key], Key]:
    """Key values as this side's driver takes them (a key read elsewhere may be a UUID, Decimal, ...)."""
    if dialect == "sqlite":
        return lambda key: tuple(sink_values.sqlite_value(v) for v in key)
    if dialect in ("mysql", "mariadb"):
        encs = [sink_values.mariadb_encoder(k) for k in kinds]
        return lambda key: tuple(e(v) for e, v in zip(encs, key, strict=True))
    return lambda key: key


class Reader:
    """One side of one table pair."""

    def __init__(
        self,
        side: Side,
        key_kinds: Sequence[str],
        *,
        rate: float | None,
        clock: Clock = SYSTEM_CLOCK,
        whole_rows: bool = False,
    ) -> None:
        """``whole_rows``: fetch every column of the table (a source, whose rows go through the transforms)."""
        self.side = side
        self.counters = Counters()
        self.limit = RateLimit(rate, clock)
        self.clock = clock
        self.bind = key_binder(side.dialect, key_kinds)
        self._engine: sa.Engine | None = None
        self._exec: ThreadPoolExecutor | None = None
        self._table = side.meta.table()
        self._keys = [self._table.c[k] for k in side.key]
        cols = list(side.meta.columns) if whole_rows else list(dict.fromkeys([*side.key, *side.columns]))
        self._select = [self._table.c[c] for c in cols]

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._exec is None:
            self._exec = ThreadPoolExecutor(1, thread_name_prefix="tidesync-reconcile")
        if self._engine is None:
            self._engine = create_engine(self.side.dsn)
        self.counters.queries += 1
        where = f"reconcile {self.side.label} at {redact(self.side.dsn)}"

        def transient(exc: Exception) -> bool:
            return isinstance(exc, sa.exc.SQLAlchemyError) and isinstance(translate(exc, where), SourceTransientError)

        # Every call is a read: after a lost connection it is simply asked again.
        try:
            async for attempt in READ_RETRY.attempts(self.clock, transient):
                with attempt:
                    return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc, where) from exc
        raise AssertionError("unreachable: the loop returns or raises")

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        executor, self._exec = self._exec, None
        await close_engine(engine, executor)

    async def estimate(self) -> int | None:
        """About how many rows this side's table holds (the total of a progress display), or None."""
        return await self._run(self._estimate)

    def _estimate(self) -> int | None:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return row_estimate(conn, self.side.meta)

    def _all(self, q: sa.Select[Any]) -> list[Any]:
        assert self._engine is not None
        with self._engine.connect() as conn:
            return list(conn.execute(q))

    def _range(self, lo: Key | None, hi: Key | None) -> Any:
        return query.key_range(self._keys, self.bind(lo) if lo else None, self.bind(hi) if hi else None)

    # --- queries ------------------------------------------------------------------------

    async def boundary(self, lo: Key | None, hi: Key | None, n: int) -> Key | None:
        """The ``n``-th key after ``lo`` (at most ``hi``), or None when the range holds fewer."""
        q = sa.select(*self._keys).where(self._range(lo, hi)).order_by(*self._keys).offset(n - 1).limit(1)
        rows = await self._run(self._all, q)
        self.counters.keys_stepped += n
        await self.limit.spend(n)
        return tuple(rows[0]) if rows else None

    async def hash_range(self, lo: Key | None, hi: Key | None) -> tuple[int, int]:
        """``(row count, digest)`` of the range, computed in the database."""
        expr: sa.ColumnClause[Any] = sa.literal_column(_row_hash_sql(self._dialect(), self.side.columns))
        q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(expr), 0)).select_from(self._table)
        rows = await self._run(self._all, q.where(self._range(lo, hi)))
        count, digest = int(rows[0][0]), int(rows[0][1])
        self.counters.rows_hashed += count
        await self.limit.spend(count)
        return count, digest

    async def boundaries(self, lo: Key | None, hi: Key | None, step: int, most: int) -> list[Key]:
        """Every ``step``-th key of ``(lo, hi]`` (at most ``most`` of them), from one pass over the range."""
        inner = (
            sa.select(*self._keys, sa.func.row_number().over(order_by=self._keys).label("_rn"))
            .where(self._range(lo, hi))
            .subquery()
        )
        outer = [inner.c[k] for k in self.side.key]
        q = sa.select(*outer).where(inner.c._rn % step == 0).order_by(*outer).limit(most)
        rows = await self._run(self._all, q)
        stepped = step * (len(rows) + 1)
        self.counters.keys_stepped += stepped
        await self.limit.spend(stepped)
        return [tuple(r) for r in rows]

    async def hash_buckets(self, lo: Key | None, hi: Key | None, bounds: Sequence[Key]) -> list[tuple[int, int]]:
        """``(count, digest)`` of each sub-range ``(lo, b1], (b1, b2], ..., (bn, hi]``, in one query."""
        expr: sa.ColumnClause[Any] = sa.literal_column(_row_hash_sql(self._dialect(), self.side.columns))
        bucket = sa.case(
            *((query.tuple_le(self._keys, self.bind(b)), i) for i, b in enumerate(bounds)), else_=len(bounds)
        ).label("_bucket")
        q = (
            sa.select(bucket, sa.func.count(), sa.func.coalesce(sa.func.sum(expr), 0))
            .select_from(self._table)
            .where(self._range(lo, hi))
            .group_by(sa.literal_column("_bucket"))
        )
        out = [(0, 0)] * (len(bounds) + 1)
        for b, count, digest in await self._run(self._all, q):
            out[int(b)] = (int(count), int(digest))
        total = sum(c for c, _ in out)
        self.counters.rows_hashed += total
        await self.limit.spend(total)
        return out

    def _dialect(self) -> sa.Dialect:
        if self._engine is None:
            self._engine = create_engine(self.side.dsn)
        return self._engine.dialect

    async def rows(self, lo: Key | None, hi: Key | None, limit: int | None = None) -> list[Row]:
        """Rows in ``(lo, hi]`` in key order (the first ``limit`` of them when given)."""
        q = sa.select(*self._select).where(self._range(lo, hi)).order_by(*self._keys)
        if limit is not None:
            q = q.limit(limit)
        rows = [dict(r._mapping) for r in await self._run(self._all, q)]
        self.counters.rows_fetched += len(rows)
        await self.limit.spend(len(rows))
        return rows

    async def rows_by_key(self, keys: Sequence[Key]) -> list[Row]:
        if not keys:
            return []
        q = sa.select(*self._select).where(query.key_in(self._keys, [self.bind(k) for k in keys]))
        rows = [dict(r._mapping) for r in await self._run(self._all, q)]
        self.counters.rows_fetched += len(rows)
        await self.limit.spend(len(rows))
        return rows
