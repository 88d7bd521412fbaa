"""PostgreSQL change data capture: logical replication with the built-in pgoutput plugin.

Modules, from pure to I/O:

- ``pgoutput``: the protocol decoder (bytes -> messages) and the row reader, pure;
- ``types``: text-format values -> exact Python values, one converter per column;
- ``relation``: a table's converter table, key and schema;
- ``assembler``: messages -> ChangeEvents, positions, streamed-transaction spill;
- ``catalog`` / ``setup``: catalog lookups, plain-words setup checks, publication;
- ``errors``: psycopg and psycopg2 errors as tidesync errors, in one place;
- ``replication``: the replication connection in a thread behind a bounded buffer;
- ``snapshot`` / ``backfill``: the initial snapshot and on-demand re-snapshots;
- ``fields``, ``shadow_store``: each row's last values (LMDB), for exact ``changed`` (field-level updates);
- ``source``: :class:`PostgresSource`; ``ops``: slot lag, :func:`drop_replication`.
"""

from tidesync.sources.postgres.config import PostgresSourceConfig
from tidesync.sources.postgres.ops import SlotLag, drop_replication, slot_lag
from tidesync.sources.postgres.source import PostgresSource

__all__ = ["PostgresSource", "PostgresSourceConfig", "SlotLag", "drop_replication", "slot_lag"]
