"""How many rows a table holds, roughly and cheaply: the total of a progress display, never a count to trust.

- Postgres: the planner's ``pg_class.reltuples`` (kept by ANALYZE and
  autovacuum); a table never analyzed (-1, usually a new and small one) is
  counted, under a two-second statement timeout.
- MariaDB/MySQL: ``information_schema.TABLES.TABLE_ROWS`` (InnoDB's estimate).
- SQLite: ``count(*)`` (a scan of a local file's smallest index: short next to the load itself).

Any error, a timeout or another dialect gives None: the display shows a count
with a rate and no ETA.
"""

from __future__ import annotations

import sqlalchemy as sa

from tidesync.sources.polling.dialect import TableMeta


def row_estimate(conn: sa.Connection, meta: TableMeta) -> int | None:
    """About how many rows ``meta``'s table holds, or None; leaves ``conn`` without a transaction open."""
    try:
        with conn.begin():
            n = _estimate(conn, meta)
    except sa.exc.SQLAlchemyError:
        return None
    return n if n is not None and n > 0 else None


def _estimate(conn: sa.Connection, meta: TableMeta) -> int | None:
    dialect = conn.dialect.name
    table = sa.table(meta.name, schema=meta.schema)
    count = sa.select(sa.func.count()).select_from(table)
    if dialect == "postgresql":
        name = f"{meta.schema}.{meta.name}" if meta.schema else meta.name
        quoted = ".".join(conn.dialect.identifier_preparer.quote(p) for p in name.split("."))
        tuples = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": quoted})
        estimate = tuples.scalar()
        if estimate is not None and estimate >= 0:
            return int(estimate)
        conn.execute(sa.text("SET LOCAL statement_timeout = '2s'"))
        return int(conn.execute(count).scalar() or 0)
    if dialect in ("mysql", "mariadb"):
        rows = conn.execute(
            sa.text(
                "SELECT TABLE_ROWS FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
            ),
            {"s": meta.schema, "t": meta.name},
        ).scalar()
        return int(rows) if rows is not None else None
    if dialect == "sqlite":
        return int(conn.execute(count).scalar() or 0)
    return None
