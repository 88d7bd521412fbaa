"""Chaos soak: a Postgres source under pgbench and a webhook source under a signed load, both into
Postgres and MariaDB, while the engine is killed, a destination restarts, a destination table is
dropped and recreated, poison rows and 1,000-level-deep payloads arrive and the source gains a column.

At the end:
- every table is equal to its source by order-independent checksum, except the poison rows, and the
  poison rows are exactly the dead-letter queue's entries;
- no pipeline ever went to ``failed``;
- every blocked period shows in the log (one ERROR line) and in the alert history (a fire, then a clear,
  POSTed to a receiver).

Random moments come from a seed printed in the output (``TIDESYNC_CHAOS_SEED`` replays one run);
``TIDESYNC_CHAOS_SECONDS`` sets the length of the load (default 75 s; the whole test takes about 3 min).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pymysql
import pytest

from tests.conftest import drop_pg_database, pg_dsn, unique
from tests.integration.e2e_support import (
    kill_engine,
    mariadb_checksum,
    pg_checksum,
    start_engine,
    status,
    stop_engine,
    wait_caught_up,
)
from tests.integration.test_webhook_crash import free_port
from tidesync.sources.webhook.signatures import sign_standard
from tidesync.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]

SEED = int(os.environ.get("TIDESYNC_CHAOS_SEED") or random.randrange(1 << 30))
SECONDS = float(os.environ.get("TIDESYNC_CHAOS_SECONDS") or 75)
SECRET = "whsec_" + base64.b64encode(b"chaos-soak-signing-key-0123456!").decode()
ALERT_SECRET = "whsec_" + base64.b64encode(b"chaos-alert-receiver-key-98765!").decode()

PGBENCH = {
    "pgbench_accounts": "aid, bid, abalance, filler",
    "pgbench_branches": "bid, bbalance, filler",
    "pgbench_tellers": "tid, bid, tbalance, filler",
    "pgbench_history": "tid, bid, aid, delta, mtime, filler",
}
SOURCE_DDL = "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL)"
PG_DEST_DDL = [
    "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL CHECK (amount >= 0))",
    "CREATE TABLE events (id text PRIMARY KEY, seq int, qty int CHECK (qty >= 0), payload text)",
]
MARIA_DEST_DDL = [
    "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))",
    "CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88))",
    "CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84))",
    "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime datetime(6), filler char(22))",
    "CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL CHECK (amount >= 0))",
    "CREATE TABLE events (id varchar(32) PRIMARY KEY, seq int, qty int CHECK (qty >= 0), payload text)",
]

CONFIG = """\
state: sqlite:///{tmp}/state.db
api: {{listen: "127.0.0.1:{port}", token: "${{file:{tmp}/token}}"}}
alerts:
  interval: 200ms
  webhook: {{url: "{alerts}/hook", secrets: "${{file:{tmp}/alert-secret}}"}}
pipelines:
  - name: db_pg_{run}
    source: {{type: postgres, dsn: "{src}", tables: {tables}, heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill1"}}
    sink: {{type: postgres, dsn: "{pg}", evolve: add_columns}}
    batch: {{max_events: 2000, max_wait_ms: 20}}
    retry: {{max_delay: 2}}
  - name: db_maria_{run}
    source: {{type: postgres, dsn: "{src}", tables: {tables}, heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill2"}}
    sink: {{type: mariadb, dsn: "{maria}"}}
    schema_changes: block
    batch: {{max_events: 2000, max_wait_ms: 20}}
    retry: {{max_delay: 2}}
  - name: hooks_pg_{run}
    source: {{type: webhook, provider: generic, name: hooks_pg_{run}, secrets: ["{secret}"],
              signature: {{scheme: standard-webhooks}},
              mapping: {{event_id_header: webhook-id, entity: events, key: [id], default_op: insert}}}}
    sink: {{type: postgres, dsn: "{pg}"}}
    batch: {{max_events: 500, max_wait_ms: 10}}
    retry: {{max_delay: 2}}
  - name: hooks_maria_{run}
    source: {{type: webhook, provider: generic, name: hooks_maria_{run}, secrets: ["{secret}"],
              signature: {{scheme: standard-webhooks}},
              mapping: {{event_id_header: webhook-id, entity: events, key: [id], default_op: insert}}}}
    sink: {{type: mariadb, dsn: "{maria}"}}
    batch: {{max_events: 500, max_wait_ms: 10}}
    retry: {{max_delay: 2}}
"""


# --- the world around the engine -------------------------------------------------------


def pg(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)  # type: ignore[arg-type]


def maria(dsn: str, *statements: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=dsn.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
        conn.commit()
    finally:
        conn.close()


def maria_up() -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2).close()
        return True
    except pymysql.MySQLError:
        return False


def mariadbd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0


def restart_mariadb() -> None:
    """Stop the server, wait for its process to exit (start-stop-daemon --oknodo would take a server still
    shutting down for a running one and start nothing), start it again."""
    if maria_up():
        subprocess.run(["mariadb-admin", "-uroot", "-h127.0.0.1", "shutdown"], check=True, capture_output=True)
    wait_until(lambda: not mariadbd_running(), timeout=60, message="mariadbd to exit")
    subprocess.run(
        ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"], check=True
    )
    wait_until(maria_up, timeout=120, interval=0.5, message="MariaDB to start again")


class OrderWriter(threading.Thread):
    """Inserts orders (1% poison: a negative amount the destinations refuse) and updates good ones."""

    def __init__(self, dsn: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rng = dsn, rng
        self.stop = threading.Event()
        self.poison: set[int] = set()
        self.has_note = threading.Event()
        self.next_id = 1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    i = self.next_id
                    self.next_id += 1
                    bad = self.rng.random() < 0.01
                    amount = -1 if bad else self.rng.randrange(1000)
                    if bad:
                        self.poison.add(i)
                    conn.execute("INSERT INTO orders (id, amount) VALUES (%s, %s)", (i, amount))
                    good = [k for k in (self.rng.randrange(1, i + 1) for _ in range(2)) if k not in self.poison]
                    for k in good:
                        if self.has_note.is_set():
                            conn.execute("UPDATE orders SET amount = amount + 1, note = %s WHERE id = %s", (f"n{i}", k))
                        else:
                            conn.execute("UPDATE orders SET amount = amount + 1 WHERE id = %s", (k,))
                    time.sleep(0.01)
        except BaseException as exc:  # surfaced by the test after join
            self.error = exc


class HookSender(threading.Thread):
    """Posts signed events to every route, each retried until acknowledged (the engine gets killed)."""

    def __init__(self, urls: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.urls, self.rng = urls, rng
        self.stop = threading.Event()
        self.acked: dict[str, set[str]] = {u: set() for u in urls}
        self.poison: set[str] = set()
        self.sent = 0

    def post(self, client: httpx.Client, url: str, event_id: str, body: bytes) -> int:
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_standard(event_id, ts, body, [SECRET]),
        }
        return client.post(url, content=body, headers=headers).status_code

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                self.sent += 1
                event_id = f"evt-{self.sent:06}"
                bad = self.rng.random() < 0.01
                if bad:
                    self.poison.add(event_id)
                body = json.dumps(
                    {
                        "id": event_id,
                        "seq": self.sent,
                        "qty": -5 if bad else self.sent % 97,
                        "payload": "x" * (self.sent % 40),
                    }
                ).encode()
                for url in self.urls:
                    while not self.stop.is_set():
                        try:
                            code = self.post(client, url, event_id, body)
                        except httpx.HTTPError:
                            code = 0
                        if 200 <= code < 300:
                            self.acked[url].add(event_id)
                            break
                        time.sleep(0.05)
                time.sleep(0.02)


class AlertReceiver:
    """Collects the alert webhooks (fires and clears) on a loopback port."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    envelope = json.loads(body)
                    receiver.notices.append(envelope.get("data", {}).get("after") or envelope)
                except ValueError:
                    receiver.notices.append({"raw": body.decode(errors="replace")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dest_pg(request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique("tschaos")
    pg(pg_dsn("postgres"), f'CREATE DATABASE "{name}"')
    yield pg_dsn(name)
    drop_pg_database(name)


def dlq(config: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "dlq", "list", str(config), "--json", "--limit", "100000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def state_of(config: Path, pipeline: str) -> str:
    return next(s["state"] for s in status(config) if s["pipeline"] == pipeline)


def deep_body(levels: int) -> bytes:
    return b'{"id": "deep", "v": ' + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"


# --- the soak -----------------------------------------------------------------------------


def test_chaos_soak(tmp_path: Path, pg_database: str, dest_pg: str, mariadb_database: str) -> None:
    print(f"chaos seed {SEED} (TIDESYNC_CHAOS_SEED={SEED} replays it), {SECONDS:g} s of load")
    rng = random.Random(SEED)
    src = pg_database
    subprocess.run(["pgbench", "-i", "-s", "1", "-q", src], check=True, capture_output=True)
    pg(src, SOURCE_DDL)
    subprocess.run(["pgbench", "-i", "-I", "dtp", "-s", "1", "-q", dest_pg], check=True, capture_output=True)
    pg(dest_pg, *PG_DEST_DDL)
    maria(mariadb_database, *MARIA_DEST_DDL)

    run = dest_pg.rsplit("_", 1)[1]
    port = free_port()
    alerts = AlertReceiver()
    (tmp_path / "token").write_text("chaos-admin-token")
    (tmp_path / "alert-secret").write_text(ALERT_SECRET)
    tables = "[" + ", ".join([*PGBENCH, "public.orders"]) + "]"
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        CONFIG.format(
            tmp=tmp_path,
            port=port,
            alerts=alerts.url,
            src=src,
            pg=dest_pg,
            maria=mariadb_database,
            tables=tables,
            secret=SECRET,
            run=run,
        )
    )
    names = {k: f"{k}_{run}" for k in ("db_pg", "db_maria", "hooks_pg", "hooks_maria")}
    hook_urls = {k: f"http://127.0.0.1:{port}/webhooks/{names[k]}" for k in ("hooks_pg", "hooks_maria")}
    log = tmp_path / "engine.log"
    blocked: list[tuple[str, str]] = []  # (pipeline, what the test broke)
    proc = start_engine(config, log)
    orders = OrderWriter(src, random.Random(SEED + 1))
    sender = HookSender(list(hook_urls.values()), random.Random(SEED + 2))
    bench: subprocess.Popen[bytes] | None = None

    def alive() -> bool:
        code = proc.poll()
        assert code is None, f"engine exited {code}:\n{log.read_text()[-4000:]}"
        return True

    def restart_engine() -> None:
        nonlocal proc
        kill_engine(proc)
        proc = start_engine(config, log)

    def block_and_heal(pipeline: str, what: str, breakage: Any, repair: Any) -> None:
        breakage()
        wait_until(
            lambda: alive() and state_of(config, pipeline) == "blocked",
            timeout=60,
            message=f"{pipeline} to be blocked by {what}",
        )
        blocked.append((pipeline, what))
        time.sleep(rng.uniform(1, 3))  # the operator takes a moment to fix it
        repair()
        wait_until(
            lambda: alive() and state_of(config, pipeline) != "blocked",
            timeout=60,
            message=f"{pipeline} to resume after {what} was fixed",
        )

    def drop_and_recreate_orders() -> None:
        backup: list[tuple[Any, ...]] = []

        def drop() -> None:
            # The operator's backup and the drop see the same rows: under the table's lock, in one transaction.
            # (A backup read before the lock misses a sink transaction that commits before the DROP gets the
            # lock, and the sink, having stored its position with those rows, rightly never writes them again.)
            with psycopg.connect(dest_pg) as conn:
                conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                backup.extend(conn.execute("SELECT * FROM orders").fetchall())
                conn.execute("DROP TABLE orders")

        def recreate() -> None:
            with psycopg.connect(dest_pg) as conn:
                conn.execute(PG_DEST_DDL[0])
                if orders.has_note.is_set():
                    conn.execute("ALTER TABLE orders ADD COLUMN note text")
                with conn.cursor().copy("COPY orders FROM STDIN") as copy:
                    for row in backup:
                        copy.write_row(row)

        block_and_heal(names["db_pg"], "a dropped destination table", drop, recreate)

    def add_column() -> None:
        def alter() -> None:
            pg(src, "ALTER TABLE orders ADD COLUMN note text")
            orders.has_note.set()

        # Postgres adds the column itself (schema_changes: evolve, the default); MariaDB's pipeline has
        # schema_changes: block, so it waits for the operator.
        block_and_heal(
            names["db_maria"],
            "a column the destination lacks",
            alter,
            lambda: maria(mariadb_database, "ALTER TABLE orders ADD COLUMN note text"),
        )

    def deep_payloads() -> None:
        with httpx.Client(timeout=10.0) as client:
            for n in range(3):
                body = deep_body(1000)
                code = sender.post(client, hook_urls["hooks_pg"], f"deep-{n}", body)
                assert 400 <= code < 500, f"a 1,000-level-deep payload got {code}"

    actions = [
        ("kill -9", restart_engine),
        ("kill -9", restart_engine),
        ("restart MariaDB", restart_mariadb),
        ("drop and recreate a destination table", drop_and_recreate_orders),
        ("ADD COLUMN on the source", add_column),
        ("1,000-level-deep payloads", deep_payloads),
    ]
    rng.shuffle(actions)
    try:
        wait_until(
            lambda: alive() and {s["state"] for s in status(config)} == {"running"},
            timeout=120,
            message="every pipeline running",
        )
        wait_until(
            lambda: alive() and _count(dest_pg, "pgbench_accounts") == 100_000,
            timeout=120,
            message="the pgbench snapshot",
        )
        bench = subprocess.Popen(
            ["pgbench", "-c", "2", "-R", "100", "-T", str(int(SECONDS)), "-n", src],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        orders.start()
        sender.start()
        started = time.monotonic()
        for i, (what, action) in enumerate(actions):
            # Spread the actions over the load, each at a random moment of its slot.
            slot = SECONDS * 0.8 / len(actions)
            at = started + slot * i + rng.uniform(0, slot * 0.5)
            time.sleep(max(0.0, at - time.monotonic()))
            print(f"{time.monotonic() - started:6.1f}s  {what}")
            action()
        out, _ = bench.communicate(timeout=SECONDS + 120)
        assert bench.returncode == 0, out.decode()
        orders.stop.set()
        sender.stop.set()
        orders.join(30)
        sender.join(30)
        assert orders.error is None, orders.error

        wait_caught_up(src, [f"tidesync_{names['db_pg']}", f"tidesync_{names['db_maria']}"], timeout=180)
        for key, url in hook_urls.items():
            want = len(sender.acked[url] - sender.poison)
            dest = dest_pg if key == "hooks_pg" else mariadb_database
            count = _count if key == "hooks_pg" else _maria_count
            wait_until(
                lambda d=dest, c=count, w=want: alive() and c(d, "events") == w,
                timeout=120,  # type: ignore[misc]
                message=f"{key}: {want} events applied",
            )
        final = status(config)
        stop_engine(proc, log)
    finally:
        orders.stop.set()
        sender.stop.set()
        if bench is not None and bench.poll() is None:
            bench.kill()
            bench.communicate()
        if proc.poll() is None:
            kill_engine(proc)
        alerts.close()
        if not maria_up():
            restart_mariadb()

    text = log.read_text()
    # No pipeline ever failed.
    assert all(s["state"] != "failed" for s in final), final
    assert "-> failed" not in text, [line for line in text.splitlines() if "failed" in line][:10]

    # Equal by checksum, except the poison rows; the poison rows are exactly the DLQ's entries.
    for table, columns in PGBENCH.items():
        want = pg_checksum(src, table, columns)
        assert pg_checksum(dest_pg, table, columns) == want, f"{table} differs in Postgres"
        assert mariadb_checksum(mariadb_database, table, columns) == want, f"{table} differs in MariaDB"
    poison = ",".join(str(i) for i in sorted(orders.poison)) or "0"
    want = pg_checksum(src, f"orders WHERE id NOT IN ({poison})", "id, amount, note")
    assert pg_checksum(dest_pg, "orders", "id, amount, note") == want, _orders_diff(src, dest_pg, poison, text)
    assert mariadb_checksum(mariadb_database, "orders", "id, amount, note") == want, "orders differ in MariaDB"
    for key, url in hook_urls.items():
        good = sorted(sender.acked[url] - sender.poison)
        if key == "hooks_pg":
            with psycopg.connect(dest_pg) as conn:
                got = sorted(r[0] for r in conn.execute("SELECT id FROM events"))
        else:
            got = sorted(_maria_ids(mariadb_database))
        assert got == good, f"{key}: {len(got)} events applied, {len(good)} expected"

    entries = dlq(config)
    by_pipeline: dict[str, set[Any]] = {}
    for e in entries:
        by_pipeline.setdefault(e["pipeline"], set()).add(_key_value(e))
    assert by_pipeline.get(names["db_pg"], set()) == orders.poison, by_pipeline
    assert by_pipeline.get(names["db_maria"], set()) == orders.poison, by_pipeline
    for key, url in hook_urls.items():
        assert by_pipeline.get(names[key], set()) == sender.poison & sender.acked[url], by_pipeline

    # Every blocked period is in the log (one ERROR line) and in the alert history (fired, then cleared).
    assert len(blocked) == 2
    for pipeline, what in blocked:
        errors = [ln for ln in text.splitlines() if "ERROR" in ln and pipeline in ln and "blocked" in ln]
        assert errors, f"no ERROR line for {pipeline} blocked by {what}"
        fired = [n for n in alerts.notices if n.get("pipeline") == pipeline and "block" in str(n.get("rule", ""))]
        kinds = [n.get("kind") for n in fired]
        assert "fired" in kinds and "cleared" in kinds, (pipeline, what, alerts.notices)


def _count(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


def _maria_count(dsn: str, table: str) -> int:
    try:
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=dsn.rsplit("/", 1)[1])
    except pymysql.MySQLError:
        return -1
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _maria_ids(dsn: str) -> list[str]:
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=dsn.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM events")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def _key_value(entry: dict[str, Any]) -> Any:
    key = entry.get("key")
    if isinstance(key, list) and len(key) == 1:
        return key[0]
    if isinstance(key, dict) and len(key) == 1:
        return next(iter(key.values()))
    return key


def _orders_diff(src: str, dest: str, poison: str, log: str) -> str:
    """What differs between the source's and the destination's orders, and what the engine logged for them."""
    query = "SELECT id, amount, note FROM orders{} ORDER BY id"
    with psycopg.connect(src) as a, psycopg.connect(dest) as b:
        want = {r[0]: r for r in a.execute(query.format(f" WHERE id NOT IN ({poison})"))}
        got = {r[0]: r for r in b.execute(query.format(""))}
    missing = sorted(set(want) - set(got))[:20]
    extra = sorted(set(got) - set(want))[:20]
    changed = [(want[i], got[i]) for i in sorted(set(want) & set(got)) if want[i] != got[i]][:20]
    lines = [line for line in log.splitlines() if "db_pg" in line and ("block" in line or "->" in line)][-30:]
    return f"orders differ in Postgres: missing {missing}, extra {extra}, changed {changed}\n" + "\n".join(lines)
