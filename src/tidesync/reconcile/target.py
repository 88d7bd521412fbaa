"""What a pipeline compares: per entity, a source table and a destination table, lined up column by column.

Source tables come from the pipeline's source config (``sql_poll``,
``postgres``, ``sqlite``: any source that names a database and its tables);
destination tables from its SQL sink (``postgres``, ``mariadb``/``mysql``,
``sqlite``), named the way the sink names them. Columns are lined up through
the pipeline's transforms: the source schema mapped by the transforms gives
the destination column names, their portable types (which decide how values
compare, see :mod:`.canonical`) and the key columns in key order.

Hashing mode per table: ``db`` when both sides are the same kind of database
(Postgres or MariaDB), the transforms only rename, select or drop columns of
the entity, and every compared column has the same type on both sides: then
both databases render a row the same way and hash it themselves, and only
hashes cross the network. Otherwise ``python``: rows are read, the source rows
transformed, and both hashed in Python on their canonical form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from tidesync.config import PipelineSpec
from tidesync.errors import ConfigError
from tidesync.event import SNAPSHOT, ChangeEvent
from tidesync.schema import EntitySchema
from tidesync.sinks.sql.tables import key_override, resolve_table
from tidesync.sources.polling.dialect import TableMeta, reflect

STRUCTURAL_STEPS = ("RenameStep", "SelectStep", "DropStep")
_TYPMOD = re.compile(r"\(.*?\)")


@dataclass(frozen=True, slots=True)
class Side:
    """One table: its dialect, reflected shape, key columns (in event-key order) and compared columns."""

    dsn: str
    dialect: str
    meta: TableMeta
    key: tuple[str, ...]
    columns: tuple[str, ...]  # compared columns, aligned with the other side's

    @property
    def label(self) -> str:
        return f"{self.meta.schema + '.' if self.meta.schema else ''}{self.meta.name}"


@dataclass(frozen=True, slots=True)
class TablePair:
    entity: str
    source: Side
    dest: Side
    kinds: tuple[str, ...]  # portable type of each compared column
    key_kinds: tuple[str, ...]
    mode: str  # "db" or "python"
    schema: EntitySchema  # the source entity's schema (before transforms)
    why_python: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)


def source_dsn(spec: PipelineSpec) -> str:
    cfg = spec.source
    dsn = getattr(cfg, "dsn", None)
    path = getattr(cfg, "path", None)
    if isinstance(dsn, str) and dsn:
        return postgres_kv_to_url(dsn) if getattr(cfg, "type", "") == "postgres" else dsn
    if isinstance(path, str) and path:
        return f"sqlite:///{path}"
    raise ConfigError(
        f"pipeline {spec.name!r}: reconcile needs a source that names a database (sql_poll, postgres, sqlite), "
        f"not {getattr(cfg, 'type', '?')!r}"
    )


def sink_dsn(spec: PipelineSpec) -> tuple[str, bool]:
    """The destination's DSN, and whether entity schema parts name schemas there (Postgres)."""
    cfg = spec.sink
    type_ = getattr(cfg, "type", "")
    if type_ == "postgres":
        return postgres_kv_to_url(cfg.dsn), True  # type: ignore[attr-defined]
    if type_ in ("mariadb", "mysql"):
        return cfg.dsn, False  # type: ignore[attr-defined]
    if type_ == "sqlite":
        return f"sqlite:///{cfg.path}", False  # type: ignore[attr-defined]
    raise ConfigError(f"pipeline {spec.name!r}: reconcile needs a SQL sink (postgres, mariadb, sqlite), not {type_!r}")


def postgres_kv_to_url(dsn: str) -> str:
    """A libpq ``key=value`` string as a URL (URLs pass through)."""
    if "://" in dsn:
        return dsn
    import psycopg.conninfo

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return "postgresql:///?" + urlencode({k: str(v) for k, v in params.items()})


def source_tables(spec: PipelineSpec) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """``(entity, table, key columns or None for the primary key)`` of every source table."""
    cfg = spec.source
    out: list[tuple[str, str, tuple[str, ...] | None]] = []
    for item in getattr(cfg, "tables", None) or []:
        if isinstance(item, str):
            entity = item
            if getattr(cfg, "type", "") == "postgres" and "." not in item:
                entity = f"public.{item}"
            out.append((entity, item, None))
        else:
            table = item.table
            out.append((item.entity or table, table, tuple(item.key) if item.key else None))
    if not out:
        raise ConfigError(f"pipeline {spec.name!r}: its source names no tables to reconcile")
    return out


def structural_mapping(transform: Any, entity: str, columns: Sequence[str]) -> dict[str, str] | None:
    """Destination column -> source column when the entity's transforms only rename/select/drop, else None."""
    if transform is None:
        return {c: c for c in columns}
    steps = [p for p in transform.steps if p.config.applies_to(entity)]
    if any(type(p.config).__name__ not in STRUCTURAL_STEPS for p in steps):
        return None
    probe = ChangeEvent(entity, ("probe",), SNAPSHOT, after={c: c for c in columns})
    out = transform(probe)
    if out is None or out.after is None:
        return None
    return {dest: src for dest, src in out.after.items() if isinstance(src, str) and src in columns}


def _base_type(native: str | None) -> str:
    return _TYPMOD.sub("", (native or "").lower()).strip()


def resolve_pair(
    spec: PipelineSpec,
    transform: Any,
    entity: str,
    table: str,
    key: tuple[str, ...] | None,
    src_engine: sa.Engine,
    dst_engine: sa.Engine,
    keep_schema: bool,
    mode: str,
) -> TablePair:
    """Line up one entity's tables (blocking: reflects both)."""
    src_meta = reflect(src_engine, table)
    src_key = key or src_meta.primary_key
    if not src_key:
        raise ConfigError(f"source table {table!r} has no primary key: reconcile needs a key")
    schema = src_meta.entity_schema(entity, tuple(src_key))
    mapped = transform.map_schema(schema) if transform is not None else schema
    sink = spec.sink
    dest_name = resolve_table(entity, getattr(sink, "tables", {}) or {}, keep_schema=keep_schema)
    dst_meta = reflect(dst_engine, str(dest_name))
    dst_key = mapped.primary_key if len(mapped.primary_key) == len(src_key) else ()
    if not dst_key:
        dst_key = key_override(dest_name, entity, getattr(sink, "keys", {}) or {}) or dst_meta.primary_key
    missing_key = [k for k in dst_key if k not in dst_meta.columns]
    if not dst_key or missing_key or len(dst_key) != len(src_key):
        raise ConfigError(
            f"{entity}: cannot line up the key of {table} ({', '.join(src_key)}) with destination table "
            f"{dest_name} (key {', '.join(dst_key) or 'none'})"
        )
    warnings = []
    columns = []
    kinds = []
    for col in mapped.columns:
        if col.name in dst_meta.columns:
            columns.append(col.name)
            kind = col.type
            if kind == "unknown":
                dcol = next(c for c in dst_meta.portable if c.name == col.name)
                kind = dcol.type
            kinds.append(kind)
        else:
            warnings.append(f"column {col.name} is not in {dest_name}: not compared")
    kind_of = dict(zip(columns, kinds, strict=True))
    for k in dst_key:
        if k not in kind_of:
            raise ConfigError(f"{entity}: key column {k} is not compared (dropped by the transforms?)")
    key_kinds = tuple(kind_of[k] for k in dst_key)

    chosen, why = "python", ""
    mapping = structural_mapping(transform, entity, src_meta.columns)
    src_columns: tuple[str, ...] = ()
    if mode == "python":
        why = "python mode asked for"
    elif src_engine.dialect.name != dst_engine.dialect.name or src_engine.dialect.name not in ("postgresql", "mysql"):
        why = f"{src_engine.dialect.name} -> {dst_engine.dialect.name}: rows are hashed in Python"
    elif mapping is None:
        why = "the transforms change values: source rows are transformed and hashed in Python"
    else:
        src_types = {c.name: c.native for c in src_meta.portable}
        dst_types = {c.name: c.native for c in dst_meta.portable}
        differing = [
            c for c in columns if c not in mapping or _base_type(src_types.get(mapping[c])) != _base_type(dst_types[c])
        ]
        if differing:
            why = f"column types differ ({', '.join(differing)}): rows are hashed in Python"
        else:
            chosen = "db"
            src_columns = tuple(mapping[c] for c in columns)
    if chosen == "python":
        src_columns = tuple(src_meta.columns)
    src_key_cols = tuple(src_key)
    return TablePair(
        entity=entity,
        source=Side(str(src_engine.url), src_engine.dialect.name, src_meta, src_key_cols, src_columns),
        dest=Side(str(dst_engine.url), dst_engine.dialect.name, dst_meta, tuple(dst_key), tuple(columns)),
        kinds=tuple(kinds),
        key_kinds=key_kinds,
        mode=chosen,
        schema=schema,
        why_python=why,
        warnings=tuple(warnings),
    )
