"""``tidesync demo``: the embedded default, end to end, with no servers and no config.

A source and a destination SQLite database are created in a work folder; a
generator makes inserts, updates and deletes at the chosen rate; a pipeline
(SQLite trigger capture → SQLite sink) keeps the destination in step; a live
view shows throughput and end-to-end latency (source statement time →
destination commit); at the end the two tables are compared row for row.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tidesync.engine import BatchPolicy, Engine, PipelineRunner
from tidesync.sinks.sql.sqlite import SqliteSink, SqliteSinkConfig
from tidesync.sources.sqlite import SqliteSource, SqliteSourceConfig
from tidesync.state import open_state_store

TABLE = "customers"
DDL = (
    f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, "
    "score REAL, balance INTEGER NOT NULL DEFAULT 0, tier TEXT)"
)
TIERS = ("free", "pro", "team", "enterprise")


class Generator:
    """Writes random changes to the source database from a thread, at a steady rate."""

    def __init__(self, path: Path, rate: float, rows: int, seed: int = 7) -> None:
        self.path = path
        self.rate = rate
        self.rng = random.Random(seed)
        self.next_id = rows + 1
        self.ids = list(range(1, rows + 1))
        self.done = threading.Event()
        self.counts = {"insert": 0, "update": 0, "delete": 0}
        self.thread = threading.Thread(target=self._run, name="demo-generator", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _one(self, conn: sqlite3.Connection) -> None:
        r = self.rng.random()
        if r < 0.3 or len(self.ids) < 10:
            i = self.next_id
            self.next_id += 1
            conn.execute(
                f"INSERT INTO {TABLE} (id, name, email, score, balance, tier) VALUES (?, ?, ?, ?, ?, ?)",
                (i, f"customer {i}", f"c{i}@example.com", self.rng.random() * 100, 0, self.rng.choice(TIERS)),
            )
            self.ids.append(i)
            self.counts["insert"] += 1
        elif r < 0.85:
            i = self.rng.choice(self.ids)
            field = self.rng.choice(("score", "balance", "tier", "email"))
            value: object = {
                "score": self.rng.random() * 100,
                "balance": self.rng.randint(-1000, 100000),
                "tier": self.rng.choice(TIERS),
                "email": f"c{i}.{self.rng.randint(0, 999)}@example.com",
            }[field]
            conn.execute(f"UPDATE {TABLE} SET {field} = ? WHERE id = ?", (value, i))
            self.counts["update"] += 1
        else:
            i = self.ids.pop(self.rng.randrange(len(self.ids)))
            conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (i,))
            self.counts["delete"] += 1

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        per_tx = max(1, int(self.rate / 200))  # about 200 transactions a second
        interval = per_tx / self.rate
        next_at = time.monotonic()
        try:
            while not self.done.is_set():
                conn.execute("BEGIN IMMEDIATE")
                for _ in range(per_tx):
                    self._one(conn)
                conn.execute("COMMIT")
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.done.wait(delay)
        finally:
            conn.close()


def create_databases(workdir: Path, rows: int) -> tuple[Path, Path]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    src, dst = workdir / "source.db", workdir / "destination.db"
    rng = random.Random(1)
    with sqlite3.connect(src) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(DDL)
        conn.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)",
            [
                (i, f"customer {i}", f"c{i}@example.com", rng.random() * 100, 0, rng.choice(TIERS))
                for i in range(1, rows + 1)
            ],
        )
    with sqlite3.connect(dst) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(DDL)
    return src, dst


def last_logged(path: Path) -> int:
    """The highest change-log sequence number ever written (the log itself is trimmed)."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = '_tidesync_log_demo'").fetchone()
    return int(row[0]) if row else 0


def table_rows(path: Path) -> dict[int, tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT * FROM {TABLE} ORDER BY id")}


def compare(src: Path, dst: Path) -> tuple[bool, str]:
    a, b = table_rows(src), table_rows(dst)
    missing = a.keys() - b.keys()
    extra = b.keys() - a.keys()
    different = [k for k in a.keys() & b.keys() if a[k] != b[k]]
    if not (missing or extra or different):
        return True, f"destination == source ({len(a):,} rows, every column equal)"
    return False, (
        f"destination != source: {len(missing)} missing, {len(extra)} extra, {len(different)} different rows"
        f" (e.g. ids {sorted(missing)[:3]} {sorted(extra)[:3]} {sorted(different)[:3]})"
    )


def _view(runner: PipelineRunner, gen: Generator, elapsed: float, duration: float, phase: str) -> Table:
    stats = runner.stats
    now = time.time()
    recent = stats.latency.recent(now, 5)
    total = stats.latency.cumulative
    table = Table(title=f"tidesync demo — SQLite → SQLite — {phase}", min_width=64)
    table.add_column("", style="bold")
    table.add_column("value", justify="right")

    def ms(v: float | None) -> str:
        return f"{v * 1000:.1f} ms" if v is not None else "-"

    table.add_row("elapsed", f"{elapsed:5.1f} / {duration:.0f} s")
    table.add_row(
        "changes generated",
        f"{gen.total:,}  (ins {gen.counts['insert']:,} / upd {gen.counts['update']:,} / del {gen.counts['delete']:,})",
    )
    table.add_row("events applied", f"{stats.events_written:,}")
    table.add_row("throughput (last 5 s)", f"{stats.rate(now, 5):,.0f} events/s")
    table.add_row(
        "end-to-end latency p50 / p99 (last 5 s)", f"{ms(recent.quantile(0.5))} / {ms(recent.quantile(0.99))}"
    )
    table.add_row("end-to-end latency p50 / p99 (whole run)", f"{ms(total.quantile(0.5))} / {ms(total.quantile(0.99))}")
    table.add_row("lag", f"{runner.lag_seconds() * 1000:.0f} ms")
    table.add_row("dead letters", str(stats.dead_lettered))
    table.add_row("pipeline state", runner.state_name)
    return table


async def run_demo(
    workdir: Path, *, rate: float, duration: float, rows: int, console: Console, live: bool = True
) -> bool:
    src, dst = create_databases(workdir, rows)
    state = open_state_store(f"sqlite:///{workdir / 'state.db'}")
    source = SqliteSource(
        SqliteSourceConfig.model_validate(
            {"path": str(src), "tables": [TABLE], "snapshot": "initial", "poll_interval_ms": 5}
        )
    )
    sink = SqliteSink(SqliteSinkConfig.model_validate({"path": str(dst)}))
    runner = PipelineRunner("demo", source, sink, state, batch=BatchPolicy(max_events=2000, max_wait=0.005))
    engine = Engine(state, [runner])
    gen = Generator(src, rate, rows)
    console.print(
        f"source {src}  →  destination {dst}  ({rows:,} rows to start, {rate:,.0f} changes/s for {duration:.0f} s)"
    )
    run_task = asyncio.create_task(engine.run(install_signals=True))
    start = time.monotonic()
    with Live(console=console, auto_refresh=False, transient=False) as view:

        def show(phase: str) -> None:
            if live:
                view.update(_view(runner, gen, time.monotonic() - start, duration, phase), refresh=True)

        # Wait for the initial snapshot to land before generating changes.
        while runner.stats.events_written < rows and not run_task.done():
            show("initial snapshot")
            await asyncio.sleep(0.1)
        gen.start()
        try:
            while time.monotonic() - start < duration and not run_task.done() and not engine.stop.is_set():
                show("syncing")
                await asyncio.sleep(0.25)
        finally:
            gen.stop()
        # Catch up: every change is applied once the checkpoint reaches the last change-log sequence.
        last = last_logged(src)
        catch_up_deadline = time.monotonic() + 60
        while time.monotonic() < catch_up_deadline and not run_task.done():
            if runner.position is not None and runner.position[0] >= last:
                break
            show("catching up")
            await asyncio.sleep(0.05)
        show("done")
    engine.request_stop()
    code = await run_task
    if code != 0:
        for name, exc in engine.failed.items():
            console.print(f"[red]pipeline {name} failed:[/] {exc}")
        return False
    ok, message = compare(src, dst)
    p50 = runner.stats.latency.cumulative.quantile(0.5)
    p99 = runner.stats.latency.cumulative.quantile(0.99)
    elapsed = time.monotonic() - start
    console.print(
        f"applied {runner.stats.events_written:,} events in {elapsed:.1f}s; end-to-end latency p50 "
        f"{(p50 or 0) * 1000:.1f} ms, p99 {(p99 or 0) * 1000:.1f} ms"
    )
    console.print(("[bold green]OK[/] " if ok else "[bold red]MISMATCH[/] ") + message)
    return ok
