"""MariaDB / MySQL change data capture from the row-based binlog (``type: mariadb`` or ``type: mysql``).

Modules: ``config`` (the pydantic model), ``positions`` (comparable, resumable
positions), ``types`` (exact values), ``tables`` (a table's shape), ``server``
(queries outside the stream, error translation), ``snapshot`` (the consistent
initial snapshot), ``stream`` (the binlog reader thread), ``rows`` (the row-image
decoder), ``records`` (row events into change events), ``marker`` (how a sync's own
writes are marked in the binlog), ``source`` (the Source). Docs: docs/connectors/mariadb-binlog.md.
"""

from tidesync.sources.mariadb.config import MariadbSourceConfig
from tidesync.sources.mariadb.source import BinlogGone, MariadbSource

__all__ = ["BinlogGone", "MariadbSource", "MariadbSourceConfig"]
