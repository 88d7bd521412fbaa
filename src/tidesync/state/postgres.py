"""The shared state store: tables in one schema of a Postgres database, for several workers.

Each store holds one psycopg 3 async connection, used by one call at a time
(an asyncio lock), in autocommit mode with an explicit transaction per write.
A call runs to its end even when its caller is cancelled, so a cancelled
commit never leaves the connection in the middle of a transaction.

Lost connections: a call that finds the connection closed reconnects once
before failing. A call that loses it before ``COMMIT`` was sent retries once on
a new connection (nothing of it was applied); a call that loses it during
``COMMIT`` fails with a :class:`StateStoreError` saying the outcome is unknown,
because replaying it could add the same dead letters or counts twice.

Leases (:class:`~tidesync.state.store.Leases`): a row per lease, taken and
renewed by one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that compares
``expires_at`` with the server's ``now()``. A fenced commit reads its lease row
``FOR SHARE`` first, so a takeover waits for a commit in flight and a commit
after a takeover sees the new epoch and applies nothing. A holder frozen in
the middle of a transaction would hold its row locks (the lease row's among
them) for as long as it is frozen, so a store that takes leases has the server
end its session once it is idle in a transaction for half the TTL; the lease
statements themselves run outside any transaction, so a freeze between two of
them holds no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg

from tidesync.errors import StateStoreError
from tidesync.event import Key, Position, unpack_value
from tidesync.state import rows as codec
from tidesync.state.store import (
    DeadLetter,
    DeadLetterFilter,
    Fence,
    JournalAppend,
    JournalEntry,
    Lease,
    PipelineStatus,
    ShadowRow,
    StateChanges,
)
from tidesync.state.url import redact_url

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

SCHEMA_VERSION = 3


def _schema_v1(s: str) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE IF NOT EXISTS {s}.meta (name text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {s}.checkpoints (pipeline text PRIMARY KEY, position bytea NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {s}.shadow (scope text NOT NULL, entity text NOT NULL, key bytea NOT NULL,"
        " row bytea NOT NULL, position bytea, committed_at double precision NOT NULL, origin text,"
        " PRIMARY KEY (scope, entity, key))",
        f"CREATE TABLE IF NOT EXISTS {s}.dead_letters (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " pipeline text NOT NULL, sink text NOT NULL, entity text NOT NULL, key bytea NOT NULL,"
        " event bytea NOT NULL, error_class text NOT NULL, error text NOT NULL, attempts integer NOT NULL,"
        " first_failed_at double precision NOT NULL, last_failed_at double precision NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS dead_letters_pipeline_sink ON {s}.dead_letters (pipeline, sink)",
        f'CREATE TABLE IF NOT EXISTS {s}.kv (namespace text NOT NULL, key text COLLATE "C" NOT NULL,'
        " value bytea NOT NULL, PRIMARY KEY (namespace, key))",
        f"CREATE TABLE IF NOT EXISTS {s}.status (pipeline text PRIMARY KEY, state text NOT NULL DEFAULT 'stopped',"
        " position bytea, events_applied bigint NOT NULL DEFAULT 0,"
        " lag_seconds double precision NOT NULL DEFAULT 0, last_committed_at double precision NOT NULL DEFAULT 0,"
        " last_error text, next_attempt_at double precision, updated_at double precision NOT NULL DEFAULT 0,"
        " extra bytea)",
    ]


def _schema_v2(s: str) -> list[str]:
    """The intake journal. A trimmed entry keeps its row (without payload) until
    the retention passes, so its event id still de-duplicates."""
    return [
        f"CREATE TABLE IF NOT EXISTS {s}.journal (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " source text NOT NULL, event_id text NOT NULL, received_at double precision NOT NULL, meta bytea,"
        " body bytea, UNIQUE (source, event_id))",
        f"CREATE INDEX IF NOT EXISTS journal_source_seq ON {s}.journal (source, seq)",
    ]


def _schema_v3(s: str) -> list[str]:
    """Leases: one owner per piece of work (tidesync.engine.lease); times are the server's."""
    return [
        f"CREATE TABLE IF NOT EXISTS {s}.leases (name text PRIMARY KEY, owner text NOT NULL, epoch bigint NOT NULL,"
        " expires_at timestamptz NOT NULL, acquired_at timestamptz NOT NULL)",
    ]


class PostgresStateStore:
    """State in schema ``schema`` (a validated identifier) of the database ``conninfo`` names."""

    def __init__(self, conninfo: str, *, schema: str = "tidesync") -> None:
        self.url = redact_url(conninfo)
        self.schema = schema
        self._conninfo = conninfo
        parts = urlsplit(conninfo)
        self._password = parts.password
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
        self._db = parts.path.lstrip("/") or parts.username or "postgres"
        self._conn: Conn | None = None
        self._opened = False
        self._lock = asyncio.Lock()
        self._q = _queries(f'"{schema}"')
        self._fences: dict[str, Fence] = {}
        self._idle_timeout_on: Conn | None = None  # the connection idle_in_transaction_session_timeout is set on
        # Leases run on a connection of their own: behind the commits of every pipeline on the one connection,
        # a renewal waited its turn for seconds under load, and the lease ran out while its holder was healthy.
        self._lease_conn: Conn | None = None
        self._lease_lock = asyncio.Lock()
        self._lease_ttl: float | None = None  # set once a lease was taken: commits then time out when idle

    # --- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        await self._shielded(self._open_locked())

    async def _open_locked(self) -> None:
        async with self._lock:
            if self._opened:
                return
            conn = await self._connect()
            try:
                await self._ensure_schema(conn)
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, psycopg.Error):
                    raise self._translate(exc, "creating the schema") from exc
                raise
            self._conn = conn
            self._opened = True

    async def close(self) -> None:
        async with self._lock:
            self._opened = False
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()
        async with self._lease_lock:
            lease_conn, self._lease_conn = self._lease_conn, None
            if lease_conn is not None:
                await lease_conn.close()

    async def _connect(self) -> Conn:
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StateStoreError(
                f"cannot connect to the Postgres state store at {self._where} (database {self._db}): {self._scrub(exc)}"
            ) from exc

    async def _ensure_schema(self, conn: Conn) -> None:
        s = f'"{self.schema}"'
        if await self._schema_version(conn) == SCHEMA_VERSION:
            return  # the common case takes no lock
        async with conn.transaction():
            # Workers starting together would race on CREATE ... IF NOT EXISTS; one creates, the rest wait.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tidesync.state:{self.schema}",))
            version = await self._schema_version(conn)
            if version is None:
                for statement in _schema_v1(s):
                    await conn.execute(statement)  # composed from a validated name
                await conn.execute(
                    f"INSERT INTO {s}.meta (name, value) VALUES ('schema_version', '1') ON CONFLICT DO NOTHING"
                )
                version = 1
            if version < 2:
                for statement in _schema_v2(s):
                    await conn.execute(statement)
            if version < 3:
                for statement in _schema_v3(s):
                    await conn.execute(statement)
            await conn.execute(f"UPDATE {s}.meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))

    async def _schema_version(self, conn: Conn) -> int | None:
        # A catalog query, not to_regclass(): after waiting on the advisory lock the
        # session's catalog cache may still remember that the table was missing.
        cur = await conn.execute(
            "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'meta'", (self.schema,)
        )
        if await cur.fetchone() is None:
            return None
        cur = await conn.execute(f"SELECT value FROM \"{self.schema}\".meta WHERE name = 'schema_version'")
        row = await cur.fetchone()
        version = int(row[0]) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise StateStoreError(
                f"Postgres state store at {self._where}, schema {self.schema}, was written by a newer tidesync "
                f"(schema version {version}; this version knows up to {SCHEMA_VERSION}): upgrade tidesync"
            )
        return version

    # --- running one call ------------------------------------------------------------

    @staticmethod
    async def _shielded(aw: Awaitable[T]) -> T:
        task = asyncio.ensure_future(aw)
        # If the caller goes away the task still finishes; take its exception so none is reported as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def _run(self, doing: str, body: Callable[[Conn], Awaitable[T]], *, write: bool, lease: bool = False) -> T:
        return await self._shielded(self._run_locked(doing, body, write, lease))

    async def _run_locked(self, doing: str, body: Callable[[Conn], Awaitable[T]], write: bool, lease: bool) -> T:
        async with self._lease_lock if lease else self._lock:
            if not self._opened:
                raise StateStoreError(f"Postgres state store {self.url} is not open")
            for attempt in (1, 2):
                conn = self._lease_conn if lease else self._conn
                if conn is None or conn.closed:
                    conn = await self._connect()
                    if lease:
                        self._lease_conn = conn
                    else:
                        self._conn = conn
                if not lease and self._lease_ttl is not None and self._idle_timeout_on is not conn:
                    # A holder frozen inside a commit must not keep the lease row locked (FOR SHARE) past the TTL.
                    await conn.execute(
                        f"SET idle_in_transaction_session_timeout = {max(500, int(self._lease_ttl * 500))}"
                    )
                    self._idle_timeout_on = conn
                committing = False
                try:
                    if not write or lease:
                        # Lease statements run in autocommit, each atomic on the server: in a transaction, a
                        # holder frozen (SIGSTOP, a paused VM) between the take and its COMMIT kept the lease row
                        # locked, and every other process waited on it for as long as the freeze lasted.
                        return await body(conn)
                    async with conn.transaction():
                        result = await body(conn)
                        committing = True  # leaving the block sends COMMIT
                    return result
                except psycopg.Error as exc:
                    if not conn.closed and not conn.broken:
                        raise self._translate(exc, doing) from exc
                    if lease:
                        self._lease_conn = None
                    else:
                        self._conn = None
                    await conn.close()
                    if committing:
                        raise StateStoreError(
                            f"lost the connection to the Postgres state store at {self._where} while {doing}; "
                            f"the commit may or may not have been applied: {self._scrub(exc)}"
                        ) from exc
                    if attempt == 2:
                        raise self._translate(exc, doing) from exc
            raise AssertionError("unreachable")

    def _translate(self, exc: psycopg.Error, doing: str) -> StateStoreError:
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return StateStoreError(
            f"Postgres state store at {self._where} (database {self._db}, schema {self.schema}): "
            f"{doing} failed{state}: {self._scrub(exc)}"
        )

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip()
        return text.replace(self._password, "***") if self._password else text

    async def _fetchall(self, doing: str, sql: str, params: Sequence[Any] = (), *, lease: bool = False) -> list[Any]:
        async def q(c: Conn) -> list[Any]:
            cur = await c.execute(sql, params)
            return await cur.fetchall()

        return await self._run(doing, q, write=False, lease=lease)

    async def _execute(self, doing: str, sql: str, params: Sequence[Any] = (), *, lease: bool = False) -> int:
        async def q(c: Conn) -> int:
            cur = await c.execute(sql, params)
            return cur.rowcount

        return await self._run(doing, q, write=True, lease=lease)

    # --- commit ----------------------------------------------------------------------

    async def commit(self, pipeline: str, changes: StateChanges) -> list[int]:
        if changes.is_empty() and not changes.events_applied:
            return []
        return await self._run("committing", lambda c: self._apply(c, pipeline, changes), write=True)

    async def _apply(self, c: Conn, pipeline: str, ch: StateChanges) -> list[int]:
        # Values are packed as they are written: a value that cannot be stored
        # fails the transaction at that point and everything before rolls back.
        q = self._q
        ids: list[int] = []
        async with c.cursor() as cur:
            fence = self._fences.get(pipeline)
            if fence is not None:
                await cur.execute(q["fence"], (fence.name,))
                codec.check_fence(pipeline, fence, await cur.fetchone())
            if ch.checkpoint is not None:
                await cur.execute(q["put_checkpoint"], (pipeline, codec.pack(ch.checkpoint, "checkpoint")))
            if ch.shadow_put:
                await cur.executemany(q["put_shadow"], [codec.shadow_params(s) for s in ch.shadow_put])
            if ch.shadow_delete:
                await cur.executemany(
                    q["delete_shadow"], [(sc, e, codec.pack(k, "shadow key")) for sc, e, k in ch.shadow_delete]
                )
            if ch.dead_letters:
                params = [codec.new_dead_letter_params(d) for d in ch.dead_letters]
                await cur.executemany(q["add_dead_letter"], params, returning=True)
                while True:  # one result set per row, in order
                    row = await cur.fetchone()
                    assert row is not None
                    ids.append(row[0])
                    if not cur.nextset():
                        break
            if ch.dlq_remove:
                await cur.execute(q["remove_dead_letters"], ([int(i) for i in ch.dlq_remove],))
            if ch.kv_put:
                await cur.executemany(
                    q["put_kv"], [(ns, k, codec.pack(v, f"value {ns}/{k}")) for (ns, k), v in ch.kv_put.items()]
                )
            if ch.kv_delete:
                await cur.executemany(q["delete_kv"], ch.kv_delete)
            if ch.status is not None:
                await cur.execute(q["put_status"], codec.status_params(pipeline, ch.status, ch.events_applied))
            elif ch.events_applied:
                await cur.execute(q["add_applied"], (pipeline, ch.events_applied))
        return ids

    async def load_checkpoint(self, pipeline: str) -> Position | None:
        rows = await self._fetchall("loading a checkpoint", self._q["get_checkpoint"], (pipeline,))
        return unpack_value(rows[0][0]) if rows else None

    async def reset_checkpoint(self, pipeline: str) -> None:
        await self._execute("resetting a checkpoint", self._q["delete_checkpoint"], (pipeline,))

    # --- shadow rows -------------------------------------------------------------------

    async def shadow_get(self, scope: str, entity: str, keys: Sequence[Key]) -> dict[Key, ShadowRow]:
        by_packed = {codec.pack(k, "shadow key"): k for k in keys}
        if not by_packed:
            return {}
        rows = await self._fetchall("reading shadow rows", self._q["get_shadow"], (scope, entity, list(by_packed)))
        return {by_packed[bytes(r[0])]: codec.shadow_from_row(scope, entity, by_packed[bytes(r[0])], r) for r in rows}

    async def shadow_scan(self, scope: str, entity: str | None = None) -> list[ShadowRow]:
        rows = await self._fetchall("scanning shadow rows", self._q["scan_shadow"], (scope, entity, entity))
        return [codec.shadow_from_row(scope, r[5], unpack_value(r[0]), r) for r in rows]

    # --- dead letters --------------------------------------------------------------------

    async def dlq_list(self, flt: DeadLetterFilter | None = None) -> list[DeadLetter]:
        where, params = codec.dlq_where(flt, "%s", "strpos(error, %s) > 0", "id = ANY(%s)", list)
        sql = f"SELECT {codec.DLQ_COLUMNS} FROM {self._q['dead_letters']}{where} ORDER BY id"
        if flt is not None and flt.limit is not None:
            sql += " LIMIT %s"
            params.append(flt.limit)
        return [codec.dead_letter_from_row(r) for r in await self._fetchall("listing dead letters", sql, params)]

    async def dlq_get(self, entry_id: int) -> DeadLetter | None:
        rows = await self._fetchall("reading a dead letter", self._q["get_dead_letter"], (entry_id,))
        return codec.dead_letter_from_row(rows[0]) if rows else None

    async def dlq_count(self, pipeline: str | None = None) -> int:
        rows = await self._fetchall("counting dead letters", self._q["count_dead_letters"], (pipeline, pipeline))
        return int(rows[0][0])

    async def dlq_parked_keys(self, pipeline: str, sink: str) -> dict[tuple[str, Key], Position]:
        rows = await self._fetchall("reading parked keys", self._q["parked_keys"], (pipeline, sink))
        return codec.newest_parked(rows)

    async def dlq_touch(self, entry_id: int, error: str, error_class: str, failed_at: float) -> None:
        """Count one more failed attempt; an id that no longer exists is ignored."""
        params = (error, error_class, failed_at, entry_id)
        await self._execute("updating a dead letter", self._q["touch_dead_letter"], params)

    async def dlq_remove(self, ids: Iterable[int]) -> int:
        id_list = [int(i) for i in ids]
        if not id_list:
            return 0
        return await self._execute("removing dead letters", self._q["remove_dead_letters"], (id_list,))

    # --- kv ---------------------------------------------------------------------------------

    async def kv_get(self, namespace: str, key: str) -> Any | None:
        rows = await self._fetchall("reading a value", self._q["get_kv"], (namespace, key))
        return unpack_value(rows[0][0]) if rows else None

    async def kv_put(self, namespace: str, key: str, value: Any) -> None:
        packed = codec.pack(value, f"value {namespace}/{key}")
        await self._execute("storing a value", self._q["put_kv"], (namespace, key, packed))

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._execute("deleting a value", self._q["delete_kv"], (namespace, key))

    async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
        rows = await self._fetchall("scanning values", self._q["scan_kv"], (namespace, prefix))
        return {r[0]: unpack_value(r[1]) for r in rows}

    # --- status -------------------------------------------------------------------------------

    async def status_get(self, pipeline: str) -> PipelineStatus | None:
        rows = await self._fetchall("reading status", self._q["get_status"], (pipeline,))
        return codec.status_from_row(rows[0]) if rows else None

    async def status_list(self) -> list[PipelineStatus]:
        rows = await self._fetchall("reading status", self._q["list_status"])
        return sorted((codec.status_from_row(r) for r in rows), key=lambda s: s.pipeline)

    # --- intake journal ---------------------------------------------------------------------

    async def journal_append(self, entries: Sequence[JournalAppend]) -> list[int | None]:
        if not entries:
            return []
        q = self._q
        rows = [codec.journal_params(e) for e in entries]

        async def body(c: Conn) -> list[int | None]:
            # Sequence numbers come from an identity column, taken when a row is
            # inserted, not when it commits: two appenders to one source would let a
            # reader see seq n+1 before n commits, and skip n. A per-source lock held
            # to commit makes the sequence grow in commit order.
            for source in sorted({r[0] for r in rows}):
                await c.execute(q["journal_lock"], (f"tidesync.journal:{self.schema}:{source}",))
            out: list[int | None] = []
            async with c.cursor() as cur:
                for row in rows:
                    await cur.execute(q["journal_append"], row)
                    got = await cur.fetchone()
                    out.append(None if got is None else int(got[0]))
            return out

        return await self._run("journaling deliveries", body, write=True)

    async def journal_read(self, source: str, after: int, limit: int, through: int | None = None) -> list[JournalEntry]:
        upper = through if through is not None else 2**63 - 1
        rows = await self._fetchall("reading the journal", self._q["journal_read"], (source, after, upper, limit))
        return [codec.journal_entry_from_row(source, r) for r in rows]

    async def journal_trim(self, source: str, through: int, forget_before: float) -> int:
        q = self._q

        async def body(c: Conn) -> int:
            cur = await c.execute(q["journal_drop_bodies"], (source, through))
            dropped = cur.rowcount
            await c.execute(q["journal_forget"], (source, through, forget_before))
            return dropped

        return await self._run("trimming the journal", body, write=True)

    # --- leases ----------------------------------------------------------------------------

    async def lease_acquire(self, name: str, owner: str, ttl: float) -> Lease:
        q = self._q

        async def body(c: Conn) -> Lease:
            cur = await c.execute(q["lease_take"], (name, owner, ttl))
            row = await cur.fetchone()
            if row is None:  # held by another owner and not expired
                cur = await c.execute(q["lease_get"], (name,))
                row = await cur.fetchone()
                assert row is not None
            return Lease(name, row[0], int(row[1]), float(row[2]))

        got = await self._run("taking a lease", body, write=True, lease=True)
        if got.owner == owner:
            self._lease_ttl = ttl
        return got

    async def lease_release(self, name: str, owner: str, epoch: int) -> bool:
        return bool(
            await self._execute("releasing a lease", self._q["lease_release"], (name, owner, epoch), lease=True)
        )

    async def lease_list(self) -> list[Lease]:
        rows = await self._fetchall("reading leases", self._q["lease_list"], lease=True)
        return [Lease(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

    def fence_commits(self, pipeline: str, fence: Fence | None) -> None:
        if fence is None:
            self._fences.pop(pipeline, None)
        else:
            self._fences[pipeline] = fence

    # --- removing a pipeline ------------------------------------------------------------------

    async def remove_pipeline(self, pipeline: str, scopes: Sequence[str] = ()) -> dict[str, int]:
        names = list(dict.fromkeys([pipeline, *scopes]))
        s = f'"{self.schema}"'

        async def body(c: Conn) -> dict[str, int]:
            cur = await c.execute(f"SELECT namespace, key FROM {s}.kv")
            kv = [(ns, k) for ns, k in await cur.fetchall() if codec.kv_owned(ns, k, names)]
            if kv:
                async with c.cursor() as many:
                    await many.executemany(self._q["delete_kv"], kv)
            counts = {"kv entries": len(kv)}
            for what, table, column in _PIPELINE_ROWS:
                cur = await c.execute(f"DELETE FROM {s}.{table} WHERE {column} = ANY(%s)", (names,))
                counts[what] = cur.rowcount
            return counts

        return await self._run("removing a pipeline's state", body, write=True)


# What remove_pipeline deletes besides kv entries: (result key, table, owner column).
_PIPELINE_ROWS = (
    ("checkpoint", "checkpoints", "pipeline"),
    ("status", "status", "pipeline"),
    ("dead letters", "dead_letters", "pipeline"),
    ("shadow rows", "shadow", "scope"),
    ("journal rows", "journal", "source"),
)


def _queries(s: str) -> dict[str, str]:
    """Every statement, with the (validated, quoted) schema name filled in once."""
    return {
        "dead_letters": f"{s}.dead_letters",
        "put_checkpoint": f"INSERT INTO {s}.checkpoints (pipeline, position) VALUES (%s, %s)"
        " ON CONFLICT (pipeline) DO UPDATE SET position = excluded.position",
        "get_checkpoint": f"SELECT position FROM {s}.checkpoints WHERE pipeline = %s",
        "delete_checkpoint": f"DELETE FROM {s}.checkpoints WHERE pipeline = %s",
        "put_shadow": f"INSERT INTO {s}.shadow (scope, entity, key, row, position, committed_at, origin)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (scope, entity, key) DO UPDATE SET row = excluded.row,"
        " position = excluded.position, committed_at = excluded.committed_at, origin = excluded.origin",
        "delete_shadow": f"DELETE FROM {s}.shadow WHERE scope = %s AND entity = %s AND key = %s",
        "get_shadow": f"SELECT key, row, position, committed_at, origin FROM {s}.shadow"
        " WHERE scope = %s AND entity = %s AND key = ANY(%s)",
        "scan_shadow": f"SELECT key, row, position, committed_at, origin, entity FROM {s}.shadow"
        ' WHERE scope = %s AND (%s::text IS NULL OR entity = %s) ORDER BY entity COLLATE "C", key',
        "add_dead_letter": f"INSERT INTO {s}.dead_letters (pipeline, sink, entity, key, event, error_class, error,"
        " attempts, first_failed_at, last_failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        "get_dead_letter": f"SELECT {codec.DLQ_COLUMNS} FROM {s}.dead_letters WHERE id = %s",
        "remove_dead_letters": f"DELETE FROM {s}.dead_letters WHERE id = ANY(%s)",
        "count_dead_letters": f"SELECT count(*) FROM {s}.dead_letters WHERE %s::text IS NULL OR pipeline = %s",
        "parked_keys": f"SELECT entity, key, event FROM {s}.dead_letters WHERE pipeline = %s AND sink = %s",
        "touch_dead_letter": f"UPDATE {s}.dead_letters SET attempts = attempts + 1, error = %s, error_class = %s,"
        " last_failed_at = %s WHERE id = %s",
        "get_kv": f"SELECT value FROM {s}.kv WHERE namespace = %s AND key = %s",
        "put_kv": f"INSERT INTO {s}.kv (namespace, key, value) VALUES (%s, %s, %s)"
        " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
        "delete_kv": f"DELETE FROM {s}.kv WHERE namespace = %s AND key = %s",
        "scan_kv": f"SELECT key, value FROM {s}.kv WHERE namespace = %s AND starts_with(key, %s) ORDER BY key",
        "put_status": f"INSERT INTO {s}.status AS t ({codec.STATUS_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (pipeline) DO UPDATE SET state = excluded.state, position = excluded.position,"
        " events_applied = t.events_applied + excluded.events_applied, lag_seconds = excluded.lag_seconds,"
        " last_committed_at = excluded.last_committed_at, last_error = excluded.last_error,"
        " next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, extra = excluded.extra",
        "add_applied": f"INSERT INTO {s}.status AS t (pipeline, events_applied) VALUES (%s, %s)"
        " ON CONFLICT (pipeline) DO UPDATE SET events_applied = t.events_applied + excluded.events_applied",
        "get_status": f"SELECT {codec.STATUS_COLUMNS} FROM {s}.status WHERE pipeline = %s",
        "list_status": f"SELECT {codec.STATUS_COLUMNS} FROM {s}.status",
        "journal_lock": "SELECT pg_advisory_xact_lock(hashtext(%s))",
        "journal_append": f"INSERT INTO {s}.journal (source, event_id, received_at, meta, body)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source, event_id) DO NOTHING RETURNING seq",
        "journal_read": f"SELECT seq, event_id, received_at, meta, body FROM {s}.journal WHERE source = %s"
        " AND seq > %s AND seq <= %s AND body IS NOT NULL ORDER BY seq LIMIT %s",
        "journal_drop_bodies": f"UPDATE {s}.journal SET body = NULL, meta = NULL"
        " WHERE source = %s AND seq <= %s AND body IS NOT NULL",
        # Taken when free, expired or already the caller's; a new owner bumps the epoch. No row back: held by another.
        "lease_take": f"INSERT INTO {s}.leases AS l (name, owner, epoch, expires_at, acquired_at)"
        " VALUES (%s, %s, 1, now() + make_interval(secs => %s), now()) ON CONFLICT (name) DO UPDATE SET"
        " epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,"
        " acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at ELSE now() END,"
        " owner = excluded.owner, expires_at = excluded.expires_at"
        " WHERE l.owner = excluded.owner OR l.expires_at <= now()"
        " RETURNING owner, epoch, extract(epoch FROM expires_at - now())",
        "lease_get": f"SELECT owner, epoch, extract(epoch FROM expires_at - now()) FROM {s}.leases WHERE name = %s",
        "lease_release": f"UPDATE {s}.leases SET expires_at = now() WHERE name = %s AND owner = %s AND epoch = %s",
        "lease_list": f"SELECT name, owner, epoch, extract(epoch FROM expires_at - now()) FROM {s}.leases"
        " ORDER BY name",
        "fence": f"SELECT owner, epoch FROM {s}.leases WHERE name = %s FOR SHARE",
        "journal_forget": f"DELETE FROM {s}.journal WHERE source = %s AND seq <= %s AND body IS NULL"
        " AND received_at < %s",
    }
