"""The admin API against a running engine: pipelines, pause/resume, dead letters, conflicts, jobs, errors, secrets."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tests.integration.api_harness import SHOP, dst_rows, make_shop, running, sample, src_insert
from tidesync.config import load_config_text
from tidesync.event import ChangeEvent
from tidesync.observe.top import run_top
from tidesync.state import open_state_store
from tidesync.state.store import NewDeadLetter, StateChanges
from tidesync.sync.record import Agreed, Seen
from tidesync.sync.store_layout import CONFLICTS, RESOLVE, conflict_entry, conflict_key
from tidesync.testing import eventually

TICKING = "alerts: {interval: 50ms}\n"  # the monitor evaluates often: tests wait on its ticks, never on a sleep
SYNC = """\
syncs:
  - name: customers
    enabled: false
    a: {{source: {{type: sqlite, path: {tmp}/crm.db, tables: [customers]}}, table: customers, key: [id]}}
    b: {{source: {{type: sqlite, path: {tmp}/billing.db, tables: [accounts]}}, table: accounts, key: [id]}}
    fields: {{id: id, email: email}}
"""


async def test_pipelines_show_live_state_and_pause_and_resume(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path) + TICKING, token) as run:
        src_insert(tmp_path, [(1, 10, "a"), (2, 20, "b")])
        await eventually(lambda: len(dst_rows(tmp_path)) == 2)
        [p] = await run.get("/api/pipelines")
        assert (p["name"], p["state"], p["running"], p["source"], p["sink"]) == (
            "shop",
            "running",
            True,
            "sqlite",
            "sqlite",
        )
        assert p["events_written"] == 2 and p["position"] == [2] and p["dlq_depth"] == 0
        assert p["latency_p99_seconds"] is not None and p["latency_p50_seconds"] <= p["latency_p99_seconds"]
        assert (await run.get("/api/pipelines/shop"))["name"] == "shop"
        assert (await run.client.get("/api/pipelines/nope")).status_code == 404

        paused = await run.post("/api/pipelines/shop/pause")
        assert paused["state"] == "paused"
        assert (await run.post("/api/pipelines/shop/pause"))["note"] == "already paused"
        ticks = run.monitor.ticks  # a read already in progress finishes; nothing is read after it
        await eventually(lambda: run.monitor.ticks >= ticks + 2, message="the read in flight done")
        src_insert(tmp_path, [(3, 30, "c")])
        ticks = run.monitor.ticks
        await eventually(lambda: run.monitor.ticks >= ticks + 5, message="a few monitor ticks while paused")
        assert 3 not in dst_rows(tmp_path)
        assert (await run.get("/api/pipelines/shop"))["state"] == "paused"
        assert (await run.post("/api/pipelines/shop/resume"))["state"] == "running"
        await eventually(lambda: 3 in dst_rows(tmp_path), message="row 3 after resume")
        assert (await run.post("/api/pipelines/shop/resume"))["note"] == "not paused"


async def test_dead_letters_list_show_replay_through_the_running_sink_and_discard(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    text = SHOP.format(tmp=tmp_path) + TICKING
    async with running(tmp_path, text, token) as run:
        src_insert(tmp_path, [(1, -1, "neg"), (2, -2, "neg"), (3, 3, "ok")])

        async def parked() -> list[dict[str, Any]]:
            entries = await run.get("/api/dlq")
            return entries if len(entries) == 2 else []

        first, second = await eventually(parked, message="two dead letters")
        assert (first["key"], first["op"], first["error_class"]) == ([1], "insert", "permanent")
        assert "negative amounts are refused" in first["error"]
        detail = await run.get(f"/api/dlq/{first['id']}")
        assert detail["event"]["after"] == {"id": 1, "amount": -1, "note": "neg"}
        assert (await run.client.get("/api/dlq/999999")).status_code == 404
        assert await run.get("/api/dlq", params={"error_class": "transient"}) == []

        # Still refused: the replay fails, the entry stays with one more attempt.
        out = await run.post("/api/dlq/replay", {"ids": [first["id"]]})
        assert out["written"] == [] and [f["id"] for f in out["failed"]] == [first["id"]]
        assert (await run.get(f"/api/dlq/{first['id']}"))["attempts"] == 2
        assert run.engine.runners[0].serial_sink.replay_writes == 1  # through the pipeline's own open sink

        with sqlite3.connect(tmp_path / "dst.db") as conn:  # the destination is fixed
            conn.execute("DROP TRIGGER no_negative")
        out = await run.post("/api/dlq/replay", {"ids": [first["id"]]})
        assert out["written"] == [first["id"]] and out["failed"] == []
        assert dst_rows(tmp_path)[1] == (1, -1, "neg")

        assert await run.post("/api/dlq/discard", {"ids": [second["id"]]}) == {"discarded": 1}
        assert 2 not in dst_rows(tmp_path)
        assert await run.get("/api/dlq") == []
        assert (await run.client.post("/api/dlq/replay", json={"ids": [second["id"]]})).status_code == 404
        assert (await run.client.post("/api/dlq/replay", json={"ids": []})).status_code == 422
        [p] = await run.get("/api/pipelines")
        assert p["dlq_depth"] == 0


async def test_replay_of_a_pipeline_not_running_here_builds_its_sink_from_the_config(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    with sqlite3.connect(tmp_path / "archive.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
    archive = f"""\
  - name: archive
    enabled: false
    source: {{type: sqlite, path: {tmp_path}/src.db, tables: [orders]}}
    sink: {{type: sqlite, path: {tmp_path}/archive.db}}
"""
    store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    event = ChangeEvent("orders", (7,), "insert", after={"id": 7, "amount": 70, "note": "x"}, position=(7,))
    [entry_id] = await store.commit(
        "archive", StateChanges(dead_letters=[NewDeadLetter("archive", "sink", event, "transient", "down")])
    )
    await store.close()
    async with running(tmp_path, SHOP.format(tmp=tmp_path) + archive, token) as run:
        names = [p["name"] for p in await run.get("/api/pipelines")]
        assert names == ["shop", "archive"]
        archived = await run.get("/api/pipelines/archive")
        assert (archived["running"], archived["state"], archived["dlq_depth"]) == (False, "never run", 1)
        assert (await run.client.post("/api/pipelines/archive/pause")).status_code == 409
        out = await run.post("/api/dlq/replay", {"ids": [entry_id]})
        assert out["written"] == [entry_id]
    with sqlite3.connect(tmp_path / "archive.db") as conn:
        assert conn.execute("SELECT id, amount FROM orders").fetchall() == [(7, 70)]


async def test_conflicts_list_show_and_resolve_records_the_request(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    entry = conflict_entry(
        cid="customers:1", sync="customers", rid=(5,), keys={"a": (5,), "b": (5,)}, field="email",
        shadow=Agreed("old@x", 10.0, "a"), a=Seen("a@x", 20.0), b=Seen("b@x", 20.5),
        rule="manual", why="both sides changed email", created_at=21.0, updated_at=21.0,
    )  # fmt: skip
    await store.commit("customers", StateChanges(kv_put={(CONFLICTS, conflict_key("customers", 1)): entry}))
    async with running(tmp_path, SHOP.format(tmp=tmp_path) + SYNC.format(tmp=tmp_path), token) as run:
        [c] = await run.get("/api/conflicts")
        assert (c["id"], c["field"], c["a"]["value"], c["b"]["value"]) == ("customers:1", "email", "a@x", "b@x")
        assert c["shadow"] == {"value": "old@x", "at": 10.0, "side": "a"}
        assert await run.get("/api/conflicts", params={"sync": "other"}) == []
        [s] = await run.get("/api/syncs")
        assert (s["name"], s["conflicts_pending"], s["a"], s["b"]) == ("customers", 1, "sqlite", "sqlite")
        assert sample(await run.scrape(), "tidesync_sync_conflicts_pending", sync="customers") == 1

        bad = await run.client.post("/api/conflicts/customers:1/resolve", json={})
        assert bad.status_code == 400 and "say what wins" in bad.json()["detail"]
        assert (await run.client.post("/api/conflicts/customers:9/resolve", json={"take": "a"})).status_code == 404
        assert (await run.client.get("/api/conflicts/not-an-id")).status_code == 404
        out = await run.post("/api/conflicts/customers:1/resolve", {"take": "b"})
        assert (out["conflict"], out["field"], out["take"]) == ("customers:1", "email", "b")
        shown = await run.get("/api/conflicts/customers:1")
        assert shown["pending_resolution"]["take"] == "b"
    # what the running sync will apply is in the state store
    request = await store.kv_get(RESOLVE, "customers/1")
    await store.close()
    assert request is not None and request["take"] == "b" and request["by"] == "admin api"


async def test_reconcile_and_snapshot_jobs(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path), token) as run:
        src_insert(tmp_path, [(1, 1, "a"), (2, 2, "b")])
        await eventually(lambda: len(dst_rows(tmp_path)) == 2)
        with sqlite3.connect(tmp_path / "dst.db") as conn:  # drift behind the pipeline's back
            conn.execute("UPDATE orders SET note = 'drifted' WHERE id = 2")
        job = await run.post("/api/pipelines/shop/reconcile", {"repair": True}, expect=202)
        assert (job["kind"], job["pipeline"], job["state"]) == ("reconcile", "shop", "running")

        async def finished() -> dict[str, Any] | None:
            j = await run.get(f"/api/jobs/{job['id']}")
            return j if j["state"] != "running" else None

        done = await eventually(finished, timeout=60, message="the reconcile job done")
        assert done["state"] == "done", done
        assert done["result"]["drift"] == 1
        assert dst_rows(tmp_path)[2] == (2, 2, "b")  # repaired
        assert [j["id"] for j in await run.get("/api/jobs")] == [job["id"]]
        assert (await run.client.get("/api/jobs/77")).status_code == 404
        snap = await run.client.post("/api/pipelines/shop/snapshot", json={"table": "orders"})
        assert snap.status_code == 409 and "cannot re-snapshot" in snap.json()["detail"]


async def test_no_response_ever_contains_a_secret(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    password = "pw-" + token[-12:]  # trust authentication ignores it; the config still holds it
    broken = f"""\
  - name: billing
    source: {{type: sqlite, path: {tmp_path}/src.db, tables: [orders], capture: billing}}
    sink: {{type: postgres, dsn: "postgresql://postgres:{password}@127.0.0.1:5432/no_such_db_{token[-8:]}"}}
"""
    async with running(tmp_path, SHOP.format(tmp=tmp_path) + broken + TICKING, token, wait_running=False) as run:
        billing = run.engine.runner("billing")
        await eventually(
            lambda: billing.state_name == "failed" or billing.last_error, timeout=30, message="billing fails"
        )
        errors = await eventually(lambda: run.get("/api/errors"), message="recent errors")
        texts = []
        for path in ("/api/pipelines", "/api/pipelines/billing", "/api/errors", "/api/overview", "/api/alerts",
                     "/api/syncs", "/api/dlq", "/api/jobs", "/metrics", "/openapi.json", "/dashboard",
                     "/dashboard/dashboard.js"):  # fmt: skip
            resp = await run.client.get(path)
            assert resp.status_code == 200, (path, resp.text)
            texts.append(resp.text)
        async with run.client.stream("GET", "/api/stream", params={"limit": 2, "interval": 0.2}) as resp:
            texts.append((await resp.aread()).decode())
        bad = await run.client.get("/api/pipelines", headers={"authorization": "Bearer " + password})
        texts.append(bad.text)
        state = await run.get("/api/pipelines/billing")
        assert state["last_error"], state
        assert any("no_such_db" in e["message"] for e in errors), errors
    everything = "\n".join(texts)
    assert "no_such_db" in everything  # the error is shown ...
    assert password not in everything  # ... without the password
    assert token not in everything


async def test_the_token_is_required_compared_exactly_and_rotates(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path), token) as run:
        for header in ({}, {"authorization": ""}, {"authorization": token}, {"authorization": f"Basic {token}"},
                       {"authorization": f"Bearer {token}x"}, {"authorization": f"Bearer {token[:-1]}"}):  # fmt: skip
            async with httpx.AsyncClient(base_url=run.url, headers=header) as anon:
                resp = await anon.get("/api/pipelines")
                assert resp.status_code == 401, header
                assert resp.headers["www-authenticate"].startswith("Bearer")
        assert (await run.client.get("/api/pipelines")).status_code == 200
        (tmp_path / "token.txt").write_text("rotated-" + token + " " + token)  # two accepted during a rotation
        assert (await run.client.get("/api/pipelines")).status_code == 200
        (tmp_path / "token.txt").write_text("rotated-" + token)
        assert (await run.client.get("/api/pipelines")).status_code == 401
        ok = await run.client.get("/api/pipelines", headers={"authorization": f"Bearer rotated-{token}"})
        assert ok.status_code == 200
        assert (await run.client.get("/healthz", headers={"authorization": ""})).status_code == 200


async def test_top_reads_the_server_and_falls_back_to_the_state_store(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path), token) as run:
        src_insert(tmp_path, [(1, 1, "a"), (2, -2, "b")])
        await eventually(lambda: len(dst_rows(tmp_path)) == 1)
        await eventually(lambda: run.engine.runners[0].stats.dead_lettered == 1)
        port = run.server.port
        loaded = load_config_text(SHOP.format(tmp=tmp_path).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        live = Console(file=io.StringIO(), width=200)
        await run_top(loaded, live, once=True)
    shown = live.file.getvalue()  # type: ignore[attr-defined]
    assert f"live from http://127.0.0.1:{port}" in shown
    # latency is known live; a dead letter in the last five minutes shows as degraded
    assert "shop" in shown and "degraded" in shown and "ms" in shown
    offline = Console(file=io.StringIO(), width=200)
    await run_top(loaded, offline, once=True)
    shown = offline.file.getvalue()  # type: ignore[attr-defined]
    assert "from the state store" in shown and "stopped" in shown
    row = next(line for line in shown.splitlines() if "shop" in line)
    assert " 1 " in row  # one applied, one dead letter


async def test_a_sync_this_process_runs_shows_its_live_state(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    for db, table in (("crm", "customers"), ("billing", "accounts")):
        with sqlite3.connect(tmp_path / f"{db}.db") as c:
            c.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, email TEXT)")
    text = SHOP.format(tmp=tmp_path) + SYNC.format(tmp=tmp_path).replace("enabled: false", "enabled: true")
    async with running(tmp_path, text, token) as run:
        [sync] = run.engine.syncs

        async def shown() -> dict[str, Any] | None:
            [s] = await run.get("/api/syncs")
            return s if s["state"] == "running" else None

        s = await eventually(shown, message="the sync shown running")
        assert s["name"] == "customers" and s["last_error"] is None and sync.state_name == "running"
