"""SQL destinations: Postgres, MariaDB/MySQL and SQLite sinks.

- ``config``: the config models (no driver imports).
- ``tables``, ``plan``: what a batch means for destination tables (pure).
- ``names``: which table and column names each database takes (pure).
- ``ddl``, ``infer``: which tables and columns a write creates, typed by the
  entity's schema or inferred from its events (pure).
- ``common``: the write algorithm shared by the three (exactly-once position,
  DDL, missing rows), over a small per-database backend.
- ``typemap``, ``values``: portable types and values per database.
- ``postgres``, ``mariadb``, ``sqlite``: the backends and sinks;
  ``*_errors``: each driver's errors translated in one place.
"""
