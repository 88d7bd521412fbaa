"""Active/passive on the state store: leases (take, renew, expire, steal, fence) against real stores,
then two `tidesync run` processes on one config with a Postgres state store: kill -9 and SIGSTOP of the active one."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, pg_checksum, running, start_engine, stop_engine, wait_caught_up
from tests.integration.test_faults import AUDIT, ITEMS, Writer, assert_applied_in_order_once, dest_db, sql
from tidesync.engine.lease import LeasedWork, LeaseSettings, holder
from tidesync.errors import LeaseLostError
from tidesync.state import Fence, Leases, StateChanges, StateStore, open_state_store
from tidesync.testing import eventually, wait_until

__all__ = ["dest_db"]  # the fixture, imported for this module's tests


# --- the lease in the store --------------------------------------------------------------


@pytest.fixture(params=["postgres", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """Two stores on one state database: two processes' views of it."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database") + "?schema=ts_state"
    else:
        url = f"sqlite:///{tmp_path / 'state.db'}"
    a, b = open_state_store(url), open_state_store(url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


def _leases(store: StateStore) -> Leases:
    assert isinstance(store, Leases)
    return store


async def test_a_lease_is_held_by_one_owner_renewed_and_taken_over_once_expired(
    stores: tuple[StateStore, StateStore],
) -> None:
    a, b = map(_leases, stores)
    got = await a.lease_acquire("pipeline:p", "A", 30)
    assert (got.owner, got.epoch) == ("A", 1) and 29 < got.remaining <= 30
    other = await b.lease_acquire("pipeline:p", "B", 30)
    assert (other.owner, other.epoch) == ("A", 1), "B took a lease A holds"
    renewed = await a.lease_acquire("pipeline:p", "A", 0.5)
    assert (renewed.owner, renewed.epoch) == ("A", 1)  # a renewal keeps the epoch
    taken = await eventually(lambda: _taken_by(b, "B"), timeout=5, interval=0.05, message="B to take the expired lease")
    assert taken.epoch == 2
    back = await a.lease_acquire("pipeline:p", "A", 30)
    assert (back.owner, back.epoch) == ("B", 2), "A renewed a lease B took over"
    assert [(x.name, x.owner, x.epoch) for x in await a.lease_list()] == [("pipeline:p", "B", 2)]


async def _taken_by(store: Leases, owner: str) -> object:
    got = await store.lease_acquire("pipeline:p", owner, 30)
    return got if got.owner == owner else None


async def test_a_released_lease_is_taken_at_once_and_a_stale_release_changes_nothing(
    stores: tuple[StateStore, StateStore],
) -> None:
    a, b = map(_leases, stores)
    got = await a.lease_acquire("sync:s", "A", 60)
    assert await a.lease_release("sync:s", "A", got.epoch)
    taken = await b.lease_acquire("sync:s", "B", 60)
    assert (taken.owner, taken.epoch) == ("B", 2)
    assert not await a.lease_release("sync:s", "A", got.epoch), "a stale owner released the new owner's lease"
    assert (await b.lease_acquire("sync:s", "B", 60)).owner == "B"


async def test_a_commit_fenced_by_a_lease_that_moved_applies_nothing(stores: tuple[StateStore, StateStore]) -> None:
    a_store, b_store = stores
    a, b = _leases(a_store), _leases(b_store)
    got = await a.lease_acquire("pipeline:p", "A", 0.3)
    a.fence_commits("p", Fence("pipeline:p", got.epoch))
    await a_store.commit("p", StateChanges(checkpoint=(1,), kv_put={("n", "k"): 1}))  # the fence holds
    await eventually(lambda: _taken_by(b, "B"), timeout=5, interval=0.05, message="B to take the lease")
    await b_store.commit("p", StateChanges(checkpoint=(2,)))  # B's commits are not fenced here
    with pytest.raises(LeaseLostError, match=r"lease pipeline:p moved from epoch 1 to B \(epoch 2\)"):
        await a_store.commit("p", StateChanges(checkpoint=(3,), kv_put={("n", "k"): 3}, events_applied=5))
    assert await b_store.load_checkpoint("p") == (2,)
    assert await b_store.kv_get("n", "k") == 1
    await a_store.commit("other", StateChanges(checkpoint=(9,)))  # other pipelines are not fenced
    a.fence_commits("p", None)
    await a_store.commit("p", StateChanges(checkpoint=(4,)))  # nor is it once the fence is removed
    assert await b_store.load_checkpoint("p") == (4,)


# --- LeasedWork: standby, takeover, loss ----------------------------------------------------


class CountingWork:
    """A stand-in for a pipeline: commits a counter under its name until stopped."""

    def __init__(self, name: str, store: StateStore) -> None:
        self.name, self.store = name, store
        self.runs = 0
        self.running = False
        self.failure: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self.runs += 1
        self.running = True
        try:
            while not stop.is_set():
                await self.store.commit(self.name, StateChanges(events_applied=1))
                await asyncio.sleep(0.02)
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            self.running = False


async def test_leased_work_runs_in_one_place_and_a_standby_takes_over(
    stores: tuple[StateStore, StateStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.lease")
    settings = LeaseSettings(ttl=1.0)
    work_a, work_b = CountingWork("p", stores[0]), CountingWork("p", stores[1])
    a = LeasedWork(stores[0], "pipeline:p", work_a, ["p"], settings, "host:1#aa")
    b = LeasedWork(stores[1], "pipeline:p", work_b, ["p"], settings, "host:2#bb")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    await eventually(lambda: work_a.running, timeout=5, message="A to run")
    task_b = asyncio.create_task(b.run(stop_b))
    await eventually(lambda: "host:1 holds lease pipeline:p" in caplog.text, timeout=5, message="B standby")
    assert (a.state, b.state, work_b.runs) == ("active", "standby", 0)
    notes = await stores[0].kv_scan("lease_standby")
    assert notes["p/host:2"]["owner"] == "host:2"

    # Steal the lease from A as a frozen A would lose it: A's renewals are refused from now on.
    lease_store = _leases(stores[1])
    await _force_expire(stores[1])
    stolen = await lease_store.lease_acquire("pipeline:p", "host:3#cc", 60)
    assert stolen.epoch == 2
    await eventually(lambda: not work_a.running and a.state == "standby", timeout=5, message="A to stop")
    # Whichever saw it first (a fenced commit, or the renewal) says who holds it now.
    assert re.search(r"LEASE LOST \(.*host:3.*epoch 2", caplog.text), caplog.text
    assert work_b.runs == 0
    await lease_store.lease_release("pipeline:p", "host:3#cc", 2)
    await eventually(lambda: work_a.running or work_b.running, timeout=5, message="a standby to take over")
    first, second, stop_first = (a, b, stop_a) if work_a.running else (b, a, stop_b)
    stop_first.set()  # a clean stop releases the lease: the other takes over at once
    await eventually(lambda: second.work.running, timeout=3, message="takeover after release")  # type: ignore[attr-defined]
    stop_a.set()
    stop_b.set()
    await asyncio.wait_for(asyncio.gather(task_a, task_b), 10)
    assert first.lease is None and second.lease is None


async def _force_expire(store: StateStore) -> None:
    """Expire every lease now, behind the holder's back (what a frozen holder sees on waking)."""
    if store.url.startswith("postgres"):
        async with await psycopg.AsyncConnection.connect(_conninfo(store), autocommit=True) as conn:
            await conn.execute("UPDATE ts_state.leases SET expires_at = now() - interval '1 second'")
    else:
        import sqlite3

        path = store.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE leases SET expires_at = 0")


def _conninfo(store: StateStore) -> str:
    return str(store._conninfo).split("?")[0]  # type: ignore[attr-defined]


# --- two `tidesync run` processes ----------------------------------------------------------------


def _config(tmp: Path, name: str, src: str, dst: str, state: str, ttl: float, src_options: str = "") -> Path:
    config = tmp / "tidesync.yaml"
    config.write_text(
        f"""\
state: "{state}"
lease: {{ttl_seconds: {ttl}}}
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}{src_options}", tables: [items], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill", reconnect_timeout: 120}}
    sink: {{type: postgres, dsn: "{dst}"}}
    batch: {{max_events: 500, max_wait_ms: 10}}
    retry: {{initial_delay: 0.2, max_delay: 2}}
"""
    )
    return config


APPLIED_BY = """
ALTER TABLE audit ADD COLUMN by_process text DEFAULT current_setting('application_name'),
                  ADD COLUMN at timestamptz DEFAULT clock_timestamp();
"""


def _active(logs: dict[str, Path]) -> str:
    """Which process took the lease (its log says so); '' while none has."""
    took = [p for p, log in logs.items() if "took lease pipeline:" in log.read_text()]
    assert len(took) <= 1, f"both processes took the lease: {took}"
    return took[0] if took else ""


def _audit(dst: str, after: float = 0.0) -> list[tuple[int, str, float]]:
    with psycopg.connect(dst) as conn:
        rows = conn.execute(
            "SELECT seq, by_process, extract(epoch FROM at)::float8 FROM audit WHERE at > to_timestamp(%s)"
            " ORDER BY seq",
            (after,),
        ).fetchall()
    return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]


def _start_pair(config: Path, tmp: Path) -> tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path]]:
    procs, logs = {}, {}
    for p in ("proc_a", "proc_b"):
        logs[p] = tmp / f"{p}.log"
        procs[p] = start_engine(config, logs[p], env={"PGAPPNAME": p})
    return procs, logs


def _stop_all(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path]) -> None:
    for p, proc in procs.items():
        if proc.poll() is None:
            stop_engine(proc, logs[p])


def _status_lease(config: Path) -> list[dict[str, object]]:
    from tests.integration.e2e_support import status

    return status(config)


@pytest.mark.slow
def test_kill_9_of_the_active_process_fails_over_within_the_ttl(tmp_path: Path, pg_database: str, dest_db: str) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, AUDIT, APPLIED_BY)
    name = "lease_" + dst.rsplit("_", 1)[1]
    ttl = 5.0
    config = _config(tmp_path, name, src, dst, f"{src}?schema=ts_state", ttl)
    procs, logs = _start_pair(config, tmp_path)
    writer = Writer(src, per_second=200)
    try:
        active = wait_until(lambda: _active(logs), timeout=60, message="one process to take the lease")
        standby = "proc_b" if active == "proc_a" else "proc_a"
        writer.start()
        wait_until(lambda: len(_audit(dst)) > 100, timeout=60, message="streaming")
        rows = _status_lease(config)
        assert rows[0]["lease_holder"] == f"{os.uname().nodename}:{procs[active].pid}", rows
        assert rows[0]["standby"] == [f"{os.uname().nodename}:{procs[standby].pid}"], rows
        assert {r[1] for r in _audit(dst)} == {active}, "the standby applied events"
        killed_at = time.time()
        kill_engine(procs[active])
        first = wait_until(
            lambda: [r for r in _audit(dst, killed_at) if r[1] == standby], timeout=60, message="takeover"
        )
        failover = first[0][2] - killed_at
        print(f"failover: {failover:.2f} s from kill -9 to the next event applied (TTL {ttl:g} s)")
        assert failover <= ttl + 5
        wait_until(lambda: len(_audit(dst, killed_at + failover + 1)) > 50, timeout=60, message="streaming on")
        writer.stop.set()
        writer.join()
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        running(procs[standby], logs[standby])
        _stop_all({standby: procs[standby]}, logs)
    finally:
        writer.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                kill_engine(proc)
    cols = "id, version, payload, flag"
    assert pg_checksum(src, "items", cols) == pg_checksum(dst, "items", cols)
    assert_applied_in_order_once(dst)


@pytest.mark.slow
def test_a_frozen_holder_commits_nothing_after_it_wakes_then_takes_the_lease_back(
    tmp_path: Path, pg_database: str, dest_db: str
) -> None:
    src, dst = pg_database, dest_db
    sql(src, ITEMS)
    sql(dst, ITEMS, AUDIT, APPLIED_BY)
    name = "fence_" + dst.rsplit("_", 1)[1]
    ttl = 2.0
    # The server ends the frozen holder's replication connection after 2 s, so the new holder gets the slot,
    # and its destination session once idle in a transaction for 1 s, so its row locks go.
    options = "?options=-c%20wal_sender_timeout%3D2s"
    dst_options = "?options=-c%20idle_in_transaction_session_timeout%3D1000"
    config = _config(tmp_path, name, src, dst + dst_options, f"{src}?schema=ts_state", ttl, options)
    procs, logs = _start_pair(config, tmp_path)
    writer = Writer(src, per_second=200)
    try:
        frozen = wait_until(lambda: _active(logs), timeout=60, message="one process to take the lease")
        other = "proc_b" if frozen == "proc_a" else "proc_a"
        writer.start()
        wait_until(lambda: len(_audit(dst)) > 100, timeout=60, message="streaming")
        procs[frozen].send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        wait_until(lambda: "took lease pipeline:" in logs[other].read_text(), timeout=30, message="takeover")
        wait_until(lambda: [r for r in _audit(dst, stopped_at) if r[1] == other], timeout=60, message="the new holder")
        wait_until(lambda: time.time() - stopped_at > 3 * ttl, timeout=30, message="a freeze of three TTLs")
        woke_at = time.time()
        procs[frozen].send_signal(signal.SIGCONT)
        wait_until(lambda: "LEASE LOST" in logs[frozen].read_text(), timeout=30, message="the woken one to stop")
        wait_until(lambda: len(_audit(dst, woke_at + 2)) > 50, timeout=60, message="streaming on")
        running(procs[frozen], logs[frozen])  # the woken one waits as standby
        host = os.uname().nodename
        wait_until(
            lambda: _status_lease(config)[0]["standby"] == [f"{host}:{procs[frozen].pid}"],
            timeout=30,
            message="status to show the woken one as standby",
        )
        assert _status_lease(config)[0]["lease_holder"] == f"{host}:{procs[other].pid}"
        late = [r for r in _audit(dst, woke_at) if r[1] == frozen]
        # The woken one takes the lease back once the new holder dies: it runs the pipeline again.
        killed_at = time.time()
        kill_engine(procs[other])
        wait_until(lambda: [r for r in _audit(dst, killed_at) if r[1] == frozen], timeout=60, message="the take-back")
        writer.stop.set()
        writer.join()
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        _stop_all({frozen: procs[frozen]}, logs)
    finally:
        writer.stop.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                kill_engine(proc)
    text = logs[frozen].read_text()
    lost = re.findall(r".*LEASE LOST.*", text)
    print(f"fencing: the woken holder logged: {lost[0].strip()[:300]}")
    assert not late, f"the woken holder applied {len(late)} events after waking: {late[:5]}"
    cols = "id, version, payload, flag"
    assert pg_checksum(src, "items", cols) == pg_checksum(dst, "items", cols)
    assert_applied_in_order_once(dst)
    assert logs[frozen].read_text().count("took lease pipeline:") == 2
    assert holder("x:1#ab") == "x:1"


# --- a two-way sync under a lease, SQLite state store -------------------------------------------


async def test_a_sync_runs_in_one_engine_and_the_other_takes_over_on_a_clean_stop(tmp_path: Path) -> None:
    import sqlite3

    from tidesync.config import load_config
    from tidesync.engine.build import build_engine

    paths = {s: tmp_path / f"{s}.db" for s in ("a", "b")}
    for p in paths.values():
        with sqlite3.connect(p) as conn:
            conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
        conn.close()

    def side(s: str) -> str:
        return f"{{source: {{type: sqlite, path: '{paths[s]}', tables: [people]}}, table: people, key: id}}"

    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path / "state.db"}
lease: {{ttl_seconds: 2}}
syncs:
  - name: pair
    a: {side("a")}
    b: {side("b")}
    fields: {{id: id, name: name}}
"""
    )

    def write(s: str, sql_text: str) -> None:
        with sqlite3.connect(paths[s]) as conn:
            conn.execute(sql_text)
        conn.close()

    def names(s: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(paths[s]) as conn:
            out = conn.execute("SELECT id, name FROM people ORDER BY id").fetchall()
        conn.close()
        return out

    engines = [build_engine(load_config(config)) for _ in range(2)]
    tasks = [asyncio.create_task(e.run(install_signals=False)) for e in engines]
    try:
        await eventually(lambda: all(e.leased for e in engines), timeout=10, message="both engines leasing")
        active = await eventually(
            lambda: [e for e in engines if e.leased[0].state == "active"], timeout=10, message="one active"
        )
        assert len(active) == 1
        first = active[0]
        second = engines[1 - engines.index(first)]
        write("a", "INSERT INTO people VALUES (1, 'Ann')")
        await eventually(lambda: names("b") == [(1, "Ann")], timeout=20, message="a → b")
        assert second.leased[0].state == "standby"
        first.request_stop()
        assert await asyncio.wait_for(tasks[engines.index(first)], 30) == 0
        await eventually(lambda: second.leased[0].state == "active", timeout=5, message="takeover on release")
        write("b", "INSERT INTO people VALUES (2, 'Bo')")
        await eventually(lambda: names("a") == [(1, "Ann"), (2, "Bo")], timeout=20, message="b → a")
    finally:
        for e in engines:
            e.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
