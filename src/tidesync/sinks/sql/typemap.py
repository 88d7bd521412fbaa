"""Portable column types (tidesync.schema) to and from each destination's own types.

Used to create tables (``create_tables``) and add columns (``evolve:
add_columns``), and to know how to encode a value for an existing column.

============  =====================  =========================  ==========================
portable      Postgres               MariaDB / MySQL            SQLite
============  =====================  =========================  ==========================
int16/32/64   smallint/integer/      SMALLINT/INT/BIGINT        INTEGER
              bigint
decimal(p,s)  numeric(p,s)           DECIMAL(p,s), p<=65 s<=30  TEXT (exact; NUMERIC
              (numeric if unknown)   (DECIMAL(65,30) unknown)   affinity would round)
float32/64    real/double precision  FLOAT/DOUBLE               REAL
string(n)     varchar(n) or text     VARCHAR(n) (n<=1024),      TEXT
                                     LONGTEXT; key: VARCHAR(255)
bool          boolean                BOOLEAN (tinyint(1))       INTEGER 0/1
date          date                   DATE                       TEXT 'YYYY-MM-DD'
time/timetz   time/timetz            TIME(6), in UTC            TEXT ISO 8601
timestamp     timestamp              DATETIME(6)                TEXT 'YYYY-MM-DD HH:MM:SS.ffffff'
timestamptz   timestamptz            DATETIME(6), in UTC        TEXT, in UTC with '+00:00'
interval      interval               BIGINT microseconds        INTEGER microseconds
uuid          uuid                   CHAR(36)                   TEXT
json          jsonb                  JSON                       TEXT (JSON)
bytes         bytea                  LONGBLOB; key VARBINARY    BLOB
array         item[]                 JSON                       TEXT (JSON)
unknown       text                   LONGTEXT; key VARCHAR(255) TEXT
============  =====================  =========================  ==========================

MariaDB has no time zone in DATETIME and no interval type: a timestamptz is
stored as its UTC wall-clock time (the sink's session runs in UTC, so TIMESTAMP
columns agree), an interval as a whole number of microseconds (exact, sortable,
summable). SQLite has no date, decimal or uuid types: text keeps them exact and
sortable (ISO 8601 text sorts in time order once in UTC).
"""

from __future__ import annotations

from tidesync.schema import Column

# The Postgres types named as the portable type they hold: mapped so both ways.
_PG_SAME_NAMES = ("date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid")
_PG = {
    "int16": "smallint",
    "int32": "integer",
    "int64": "bigint",
    "decimal": "numeric",  # array items; columns carry precision and scale
    "float32": "real",
    "float64": "double precision",
    "string": "text",
    "bool": "boolean",
    **{name: name for name in _PG_SAME_NAMES},
    "json": "jsonb",
    "bytes": "bytea",
    "unknown": "text",
}

_MARIADB = {
    "int16": "SMALLINT",
    "int32": "INT",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "string": "LONGTEXT",
    "bool": "BOOLEAN",
    "date": "DATE",
    "time": "TIME(6)",
    "timetz": "TIME(6)",
    "timestamp": "DATETIME(6)",
    "timestamptz": "DATETIME(6)",
    "interval": "BIGINT",
    "uuid": "CHAR(36)",
    "json": "JSON",
    "bytes": "LONGBLOB",
    "array": "JSON",
    "unknown": "LONGTEXT",
}

_SQLITE = {
    "int16": "INTEGER",
    "int32": "INTEGER",
    "int64": "INTEGER",
    "decimal": "TEXT",
    "float32": "REAL",
    "float64": "REAL",
    "string": "TEXT",
    "bool": "INTEGER",
    "date": "TEXT",
    "time": "TEXT",
    "timetz": "TEXT",
    "timestamp": "TEXT",
    "timestamptz": "TEXT",
    "interval": "INTEGER",
    "uuid": "TEXT",
    "json": "TEXT",
    "bytes": "BLOB",
    "array": "TEXT",
    "unknown": "TEXT",
}


def postgres_type(col: Column) -> str:
    t = col.type
    if t == "decimal":
        if col.precision:
            return f"numeric({col.precision},{col.scale or 0})"
        return "numeric"
    if t == "string" and col.length:
        return f"varchar({col.length})"
    if t == "array":
        item = _PG.get(col.item or "unknown", "text")
        return f"{item}[]"
    return _PG[t]


def mariadb_type(col: Column, *, is_key: bool = False) -> str:
    t = col.type
    if t == "decimal":
        if col.precision:
            precision = min(col.precision, 65)
            return f"DECIMAL({precision},{min(col.scale or 0, 30, precision)})"
        return "DECIMAL(65,30)"
    if t in ("string", "unknown"):
        # A key needs a bounded type (index length); a long VARCHAR would eat the 64 KiB row limit.
        if is_key:
            return f"VARCHAR({min(col.length or 255, 768)})"
        if col.length and col.length <= 1024:
            return f"VARCHAR({col.length})"
        return "LONGTEXT"
    if t == "bytes" and is_key:
        return f"VARBINARY({min(col.length or 255, 3072)})"
    return _MARIADB[t]


def sqlite_type(col: Column) -> str:
    return _SQLITE[col.type]


# --- what an existing column holds ----------------------------------------------------------


def kind_of_postgres(typname: str, category: str) -> str:
    """Portable kind of a Postgres column from pg_type (typname, typcategory)."""
    if category == "A":
        return "array"
    return _PG_KINDS.get(typname, "string" if category == "S" else "unknown")


_PG_KINDS = {
    "int2": "int16",
    "int4": "int32",
    "int8": "int64",
    "numeric": "decimal",
    "float4": "float32",
    "float8": "float64",
    "bool": "bool",
    **{name: name for name in _PG_SAME_NAMES},
    "json": "json",
    "jsonb": "json",
    "bytea": "bytes",
}


def kind_of_mariadb(data_type: str, column_type: str) -> str:
    """Portable kind of a MariaDB column from information_schema (DATA_TYPE, COLUMN_TYPE)."""
    dt = data_type.lower()
    if dt == "tinyint" and column_type.lower().startswith("tinyint(1)"):
        return "bool"
    if dt in ("tinyint", "smallint", "year"):
        return "int16"
    if dt in ("mediumint", "int", "integer"):
        return "int32"
    if dt in ("bigint", "bit"):
        return "int64"
    if dt in ("decimal", "numeric"):
        return "decimal"
    if dt == "float":
        return "float32"
    if dt in ("double", "real"):
        return "float64"
    if dt in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"):
        return "string"
    if dt in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
        return "bytes"
    if dt == "datetime":
        return "timestamp"
    if dt == "timestamp":
        return "timestamptz"
    return {"date": "date", "time": "time", "json": "json", "uuid": "uuid"}.get(dt, "unknown")


def kind_of_sqlite(declared: str) -> str:
    """Portable kind of a SQLite column from its declared type (by SQLite's affinity rules)."""
    d = declared.upper()
    if "INT" in d:
        return "int64"
    if any(s in d for s in ("CHAR", "CLOB", "TEXT")):
        return "string"
    if "BLOB" in d or not d:
        return "bytes" if d else "unknown"
    if any(s in d for s in ("REAL", "FLOA", "DOUB")):
        return "float64"
    return "decimal"
