"""Google Sheets as source and sink, against the local fake of the Sheets v4 / Drive v3 / OAuth2 APIs.

The source and sink are driven in-process (a SQLite state store, the fake on
loopback); Postgres → gsheets (with ``key:``, and without: rows found by a
hidden ``_tidesync_id`` column) runs ``tidesync run`` in a subprocess while
this process serves the fake. gspread, pointed at the same fake, performs the
same operations as the fidelity check of its answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.e2e_support import kill_engine, start_engine, stop_engine
from tests.integration.webhook_support import serve
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sheets.gsheets_config import GSheetsSinkConfig, GSheetsSourceConfig
from tidesync.sheets.gsheets_sink import GSheetsSink
from tidesync.sheets.gsheets_source import GSheetsSource
from tidesync.state import open_state_store
from tidesync.testing import FakeClock, eventually, read_batches
from tidesync.testing.gsheets import FakeGSheets

SID = "1AbCtidesyncTest"
HEADER = ["id", "name", "qty", "phone"]


class Google:
    """The fake served on loopback, with a service-account key file for it."""

    def __init__(self, fake: FakeGSheets, url: str, key: Path) -> None:
        self.fake, self.url, self.key = fake, url, key

    def conf(self, **extra: Any) -> dict[str, Any]:
        return {"type": "gsheets", "spreadsheet_id": SID, "sheet": "Customers", "key": ["id"],
                "credentials": f"${{file:{self.key}}}", "base_url": self.url, "drive_url": self.url,
                "rate_limit": {"per_second": 1000}, **extra}  # fmt: skip


@pytest.fixture
async def google(tmp_path: Path) -> AsyncIterator[Google]:
    fake = FakeGSheets()
    async with serve(app=fake.app) as api:
        key = tmp_path / "sa.json"
        key.write_text(json.dumps(fake.service_account(f"{api.url}/token")))
        yield Google(fake, api.url, key)


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="gsheets", name="x", state=store)
    await store.close()


async def events_of(source: GSheetsSource, ctx: Context, count: int) -> tuple[list[ChangeEvent], list[str]]:
    """``count`` events and rejections (their state committed, as the engine would); then nothing more."""
    batches = await read_batches(source, count, timeout=10)
    for b in batches:
        if b.state is not None:
            await ctx.state.commit(ctx.pipeline, b.state)
    extra = await source.read(100, 0.2)
    assert extra.events == [] and extra.rejected == [], extra
    return [e for b in batches for e in b.events], [why for b in batches for _, why in b.rejected]


def brief(events: list[ChangeEvent]) -> list[tuple[str, tuple[Any, ...], tuple[str, ...] | None]]:
    return [(e.op, e.key, e.changed) for e in events]


async def test_cell_edits_inserts_and_deletes_become_exact_events(google: Google, ctx: Context) -> None:
    fake = google.fake
    fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "Ada", 5, "0123"], [2, "Bob", 7, "0456"]],
                               "Other": [["x"]]})  # fmt: skip
    src = GSheetsSource(GSheetsSourceConfig.model_validate(google.conf(poll_interval=0.05)))
    await src.open(ctx, None)
    first, _ = await events_of(src, ctx, 2)
    assert brief(first) == [("insert", (1,), None), ("insert", (2,), None)]
    assert first[0].after == {"id": 1, "name": "Ada", "qty": 5, "phone": "0123"}  # text stays text
    reads = src.reads
    await src.read(10, 0.3)
    assert src.reads == reads  # no revision change: only the Drive check, no values read

    fake.set(SID, "Customers", "B3", "Bobby")  # a single-cell edit
    (upd,), _ = await events_of(src, ctx, 1)
    assert brief([upd]) == [("update", (2,), ("name",))]
    assert upd.before is not None and upd.before["name"] == "Bob" and upd.after is not None
    assert upd.after["name"] == "Bobby"

    fake.insert_row(SID, "Customers", 3, [3, "Cy", 1.5, "0789"])  # a row inserted between two
    (ins,), _ = await events_of(src, ctx, 1)
    assert brief([ins]) == [("insert", (3,), None)] and ins.after is not None
    assert str(ins.after["qty"]) == "1.5"

    fake.delete_row(SID, "Customers", 2)  # Ada's row
    (gone,), _ = await events_of(src, ctx, 1)
    assert brief([gone]) == [("delete", (1,), None)] and gone.before is not None and gone.before["name"] == "Ada"
    await src.close()

    fake.set(SID, "Customers", "C2", 9)  # while stopped: a restart diffs against what was handed on
    again = GSheetsSource(GSheetsSourceConfig.model_validate(google.conf(poll_interval=0.05)))
    await again.open(ctx, gone.position)
    (later,), _ = await events_of(again, ctx, 1)
    assert brief([later]) == [("update", (3,), ("qty",))] and later.position > gone.position
    await again.close()


async def test_a_bad_cell_is_rejected_with_its_address(google: Google, ctx: Context) -> None:
    rows: list[list[Any]] = [["id", "name", "joined", "qty"]]
    rows += [[i, f"c{i}", "2024-01-15", i] for i in range(1, 20)]
    google.fake.add_spreadsheet(SID, {"Customers": rows})
    google.fake.set(SID, "Customers", "D17", "abc")
    conf = google.conf(poll_interval=0.05, columns={"qty": "number", "joined": "date"})
    src = GSheetsSource(GSheetsSourceConfig.model_validate(conf))
    await src.open(ctx, None)
    events, rejected = await events_of(src, ctx, 19)
    assert len(events) == 18 and rejected == ["Customers!D17: 'abc' is not a number"]
    assert events[0].after is not None and str(events[0].after["joined"]) == "2024-01-15"
    google.fake.set(SID, "Customers", "D17", 16)  # fixed: the row flows
    (fixed,), none = await events_of(src, ctx, 1)
    assert brief([fixed]) == [("insert", (16,), None)] and none == []
    await src.close()


async def test_429_retry_after_is_waited_out_and_an_expired_token_is_refreshed(google: Google, ctx: Context) -> None:
    fake = google.fake
    fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "Ada", 5, "0123"]]})
    sink = GSheetsSink(GSheetsSinkConfig.model_validate(google.conf()))
    await sink.open(ctx)
    assert sink.api is not None
    fake.faults.queue.append((429, {"Retry-After": "1"}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sink.write([ChangeEvent("c", (2,), "insert", after={"id": 2, "name": "Bob"}, position=(1,))])
    assert loop.time() - started >= 0.9  # the Retry-After was respected
    assert sink.api.client.throttled == 1
    assert fake.values(SID, "Customers")[2][:2] == [2, "Bob"]
    issued = fake.issued
    fake.tokens = dict.fromkeys(fake.tokens, 0.0)  # every token expires: the next request gets a 401
    await sink.write([ChangeEvent("c", (2,), "update", after={"id": 2, "name": "Bo"}, changed=("name",),
                                  position=(2,))])  # fmt: skip
    assert fake.issued == issued + 1  # a new token was asked for once, and the write went through
    assert [r.path for r in fake.seen if r.path == "/token"] == ["/token", "/token"]
    assert fake.values(SID, "Customers")[2][:2] == [2, "Bo"]
    fake.faults.queue.extend([(503, {}), (500, {})])  # injected 5xx: retried
    await sink.write([ChangeEvent("c", (1,), "delete", before={"id": 1}, position=(3,))])
    assert fake.values(SID, "Customers") == [HEADER, [2, "Bo"]]
    await sink.close()


async def test_a_token_is_refreshed_before_it_expires(google: Google, ctx: Context) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER]})
    clock = FakeClock()
    sink = GSheetsSink(GSheetsSinkConfig.model_validate(google.conf()))
    await sink.open(Context(pipeline="gsheets", name="x", state=ctx.state, clock=clock))
    await sink.write([ChangeEvent("c", (1,), "insert", after={"id": 1, "name": "Ada"}, position=(1,))])
    clock.advance(3600 - 59)  # within a minute of the token's expiry
    await sink.write([ChangeEvent("c", (2,), "insert", after={"id": 2, "name": "Bob"}, position=(2,))])
    assert google.fake.issued == 2
    assert not [r for r in google.fake.seen if r.path != "/token" and r.headers.get("authorization") is None]
    assert len(google.fake.values(SID, "Customers")) == 3
    await sink.close()


async def test_the_sink_upserts_only_mapped_cells_appends_and_removes(google: Google, ctx: Context) -> None:
    fake = google.fake
    fake.add_spreadsheet(SID, {"Customers": [[*HEADER, "note"], [1, "Ada", 5, "0123", "=C2*2"],
                                             [2, "Bob", 7, "0456", "keep"]]})  # fmt: skip
    sink = GSheetsSink(GSheetsSinkConfig.model_validate(google.conf()))
    await sink.open(ctx)
    batch = [
        ChangeEvent("c", (1,), "update", after={"id": 1, "qty": 6}, changed=("qty",), position=(1,)),
        ChangeEvent("c", (3,), "insert", after={"id": 3, "name": "Cy", "qty": 1, "phone": "0789", "vip": True},
                    position=(2,)),
        ChangeEvent("c", (2,), "delete", before={"id": 2}, position=(3,)),
    ]  # fmt: skip
    await sink.write(batch)
    assert fake.values(SID, "Customers") == [
        [*HEADER, "note", "vip"], [1, "Ada", 6, "0123", "=C2*2"], [3, "Cy", 1, "0789", "", True]]  # fmt: skip
    seen = len(fake.seen)
    await sink.write(batch)  # re-delivered: skipped by position
    await sink.write(batch, replay=True)  # replayed: upserts by key change nothing
    assert fake.values(SID, "Customers")[1:] == [[1, "Ada", 6, "0123", "=C2*2"], [3, "Cy", 1, "0789", "", True]]
    assert len(fake.seen) - seen <= 4  # one read and the cell writes: no append, no delete the second time
    await sink.close()

    fresh = GSheetsSink(GSheetsSinkConfig.model_validate(google.conf(sheet="Orders", deletes="mark")))
    await fresh.open(Context(pipeline="gsheets", name="orders", state=ctx.state))
    await fresh.write([
        ChangeEvent("o", (7,), "insert", after={"id": 7, "day": dt.date(2024, 1, 15), "total": Decimal("9.99")},
                    position=(1,)),
        ChangeEvent("o", (8,), "insert", after={"id": 8, "day": None, "total": Decimal("0.1") / 3}, position=(2,)),
        ChangeEvent("o", (7,), "delete", before={"id": 7}, position=(3,)),
    ])  # fmt: skip
    assert fake.values(SID, "Orders") == [  # a new sheet: created, with a header; a delete marked
        ["id", "day", "total", "_deleted"],
        [7, "2024-01-15", 9.99, True],
        [8, "", str(Decimal("0.1") / 3)],
    ]
    await fresh.close()


def structure_requests(fake: FakeGSheets) -> list[str]:
    """The kinds of the ``spreadsheets.batchUpdate`` requests the fake received, in order."""
    path = f"/v4/spreadsheets/{SID}:batchUpdate"
    bodies = [json.loads(r.body) for r in fake.seen if r.method == "POST" and r.path == path]
    return [kind for b in bodies for req in b["requests"] for kind in req]


async def test_a_sink_without_key_finds_rows_by_a_hidden_id_column(google: Google, ctx: Context) -> None:
    fake = google.fake
    book = fake.add_spreadsheet(SID, {"Lines": [["order_id", "line", "sku", "qty"]]})
    book.sheets[0].column_count = 4  # a grid just as wide as the header: the id column needs one more
    conf = {k: v for k, v in google.conf(sheet="Lines").items() if k != "key"}
    sink = GSheetsSink(GSheetsSinkConfig.model_validate(conf))
    assert sink.gconfig.key is None
    await sink.open(ctx)

    def line(op: str, order: int, no: int, pos: int, **fields: Any) -> ChangeEvent:
        after = {"order_id": order, "line": no, **fields} if op != "delete" else None
        changed = tuple(fields) if op == "update" else None
        return ChangeEvent("lines", (order, no), op, after=after, changed=changed, position=(pos,))

    batch = [
        line("insert", 7, 1, 1, sku="a", qty=1),
        line("insert", 7, 2, 2, sku="b", qty=2),  # same order, another line: its own row
        line("insert", 8, 1, 3, sku="c", qty=3),
        line("insert", 9, 1, 4, sku="d", qty=4),
        line("update", 7, 2, 5, qty=20),
        line("delete", 8, 1, 6),
    ]
    await sink.write(batch)
    want = [["order_id", "line", "sku", "qty", "_tidesync_id"], [7, 1, "a", 1, "[7,1]"], [7, 2, "b", 20, "[7,2]"],
            [9, 1, "d", 4, "[9,1]"]]  # fmt: skip
    assert fake.values(SID, "Lines") == want
    assert fake.hidden_columns(SID, "Lines") == {4}  # E, the id column; the grid grew and hid it in one request
    assert structure_requests(fake) == ["appendDimension", "updateDimensionProperties"]  # 8/1 never reached it

    fake.set(SID, "Lines", "C2", "edited")  # a person's edit, and a person showing the id column again
    await asyncio.to_thread(lambda: gspread_client(google).open_by_key(SID).worksheet("Lines").unhide_columns(4, 5))
    later = [line("update", 9, 1, 7, qty=40), line("insert", 10, 1, 8, sku="e", qty=5), line("delete", 7, 1, 9)]
    await sink.write(later)
    await sink.write(batch + later)  # re-delivered: skipped by position
    await sink.write(later, replay=True)  # replayed: found by id, nothing added
    assert fake.values(SID, "Lines") == [want[0], want[2], [9, 1, "d", 40, "[9,1]"], [10, 1, "e", 5, "[10,1]"]]
    assert fake.hidden_columns(SID, "Lines") == set()  # not hidden a second time
    assert structure_requests(fake)[2:] == ["updateDimensionProperties", "deleteDimension"]  # gspread's; 7/1 gone
    await sink.close()

    # A new sink (no position kept) re-writes every row: each lands on its row again.
    again = GSheetsSink(GSheetsSinkConfig.model_validate(conf))
    await again.open(Context(pipeline="gsheets", name="again", state=ctx.state))
    await again.write(batch + later)
    assert fake.values(SID, "Lines") == [want[0], want[2], [9, 1, "d", 40, "[9,1]"], [10, 1, "e", 5, "[10,1]"]]
    await again.close()
    assert structure_requests(fake).count("updateDimensionProperties") == 2  # the sink's once, the person's once


# --- gspread pointed at the fake: the fidelity check ------------------------------------------------


def gspread_client(google: Google) -> Any:
    """gspread over an AuthorizedSession whose adapter sends Google's hosts to the fake."""
    import gspread
    import requests
    from google.auth.transport.requests import AuthorizedSession
    from google.oauth2.service_account import Credentials

    class ToFake(requests.adapters.HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            for host in ("https://sheets.googleapis.com", "https://www.googleapis.com"):
                request.url = request.url.replace(host, google.url)
            return super().send(request, **kwargs)

    info = json.loads(google.key.read_text())
    creds = Credentials.from_service_account_info(info, scopes=["https://www.googleapis.com/auth/spreadsheets"])
    session = AuthorizedSession(creds)
    session.mount("https://", ToFake())
    return gspread.Client(auth=creds, session=session)


async def test_gspread_reads_and_writes_the_fake(google: Google) -> None:
    google.fake.add_spreadsheet(SID, {"Customers": [HEADER, [1, "Ada", 5, "0123"]]})

    def drive() -> None:
        import gspread

        gc = gspread_client(google)
        book = gc.open_by_key(SID)
        ws = book.worksheet("Customers")
        before = book.get_lastUpdateTime()  # Drive files.get?fields=id,name,createdTime,modifiedTime
        assert ws.row_count == 1000 and ws.col_count == 26
        assert ws.get_all_values() == [HEADER, ["1", "Ada", "5", "0123"]]  # FORMATTED_VALUE: text
        ws.update([["Adele", 6]], "B2:C2")
        assert book.get_lastUpdateTime() > before
        ws.append_row([2, "Bob", 7, "0456"])
        ws.append_rows([[3, "Cy", 8, "0789"], [4, "Dee", 9, ""]])
        assert ws.get("A2:B3") == [["1", "Adele"], ["2", "Bob"]]
        assert ws.get_all_records()[1] == {"id": 2, "name": "Bob", "qty": 7, "phone": 456}  # gspread's own numericise
        ws.delete_rows(3)
        ws.batch_clear(["D5"])
        assert ws.col_values(1) == ["id", "1", "3", "4"]
        assert book.values_batch_get(["Customers!A1:B2"], params={"valueRenderOption": "UNFORMATTED_VALUE"})[
            "valueRanges"][0]["values"] == [["id", "name"], [1, "Adele"]]  # fmt: skip
        ws.hide_columns(1, 4)  # updateDimensionProperties: hiddenByUser true for B:D
        ws.unhide_columns(1, 3)  # and false for B:C
        assert google.fake.hidden_columns(SID, "Customers") == {3}
        with pytest.raises(gspread.exceptions.APIError, match="out of the grid"):
            ws.hide_columns(20, 27)  # past the grid's 26 columns: refused, nothing hidden
        assert google.fake.hidden_columns(SID, "Customers") == {3}

    await asyncio.to_thread(drive)
    assert google.fake.values(SID, "Customers") == [HEADER, [1, "Adele", 6, "0123"], [3, "Cy", 8, "0789"],
                                                   [4, "Dee", 9]]  # fmt: skip


# --- Postgres -> gsheets through `tidesync run` ---------------------------------------------------

CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{dsn}", tables: [customers], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: gsheets, spreadsheet_id: {sid}, sheet: Customers, key: [id], credentials: "${{file:{key}}}",
            base_url: "{url}", drive_url: "{url}", rate_limit: {{per_second: 200}}}}
    batch: {{max_events: 200, max_wait_ms: 50}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


async def sql(dsn: str, statements: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(statements)


async def test_postgres_to_gsheets_through_tidesync_run(tmp_path: Path, pg_database: str, google: Google) -> None:
    fake = google.fake
    fake.add_spreadsheet(SID, {"Customers": [HEADER]})
    await sql(pg_database, """
        CREATE TABLE customers (id integer PRIMARY KEY, name text, qty integer, phone text);
        INSERT INTO customers SELECT g, 'c' || g, g % 10, '0' || g FROM generate_series(1, 50) g;
    """)  # fmt: skip
    config = tmp_path / "tidesync.yaml"
    name = "pg_gsheets_" + pg_database.rsplit("_", 1)[-1]  # a slot of its own: slots are per server, not per database
    config.write_text(CONFIG.format(tmp=tmp_path, dsn=pg_database, sid=SID, key=google.key, url=google.url, name=name))
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)

    async def table() -> dict[int, list[Any]]:
        async with await psycopg.AsyncConnection.connect(pg_database) as conn:
            cur = await conn.execute("SELECT id, name, qty, phone FROM customers")
            return {r[0]: [v if v is not None else "" for v in r] for r in await cur.fetchall()}

    async def same() -> bool:
        assert proc.poll() is None, log.read_text()[-4000:]
        rows = fake.values(SID, "Customers")[1:]
        want = await table()
        return len(rows) == len(want) and {r[0]: (r + [""] * 4)[:4] for r in rows} == want

    try:
        await eventually(same, timeout=30, interval=0.1, message="the snapshot in the sheet")
        fake.set(SID, "Customers", "F1", "notes")  # a person's column: never touched
        await sql(pg_database, """
            UPDATE customers SET qty = qty + 100 WHERE id % 3 = 0;
            DELETE FROM customers WHERE id % 7 = 0;
            INSERT INTO customers SELECT g, 'n' || g, 1, '00' || g FROM generate_series(51, 80) g;
            UPDATE customers SET name = 'renamed' WHERE id = 60;
            DELETE FROM customers WHERE id = 51;
        """)  # fmt: skip
        await eventually(same, timeout=30, interval=0.1, message="every change in the sheet")
    finally:
        try:
            await asyncio.to_thread(stop_engine, proc, log)
        finally:
            if proc.poll() is None:
                await asyncio.to_thread(kill_engine, proc)
    rows = fake.values(SID, "Customers")
    assert rows[0][:4] == HEADER and rows[0][5] == "notes"
    assert [r[3] for r in rows[1:] if r[0] == 8] == ["08"]  # leading-zero text stayed text


# --- Postgres -> a gsheets sink without key: a hidden _tidesync_id column -------------------------------------

KEYLESS = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{dsn}", tables: [lines], heartbeat_interval: 1, progress: false,
              work_dir: "{tmp}/spill"}}
    sink: {{type: gsheets, spreadsheet_id: {sid}, sheet: Lines, credentials: "${{file:{key}}}",
            base_url: "{url}", drive_url: "{url}", rate_limit: {{per_second: 200}}}}
    batch: {{max_events: 200, max_wait_ms: 50}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""
LINE = ("order_id", "line", "sku", "qty", "_tidesync_id")


async def test_postgres_to_a_gsheets_sink_without_key_through_tidesync_run(
    tmp_path: Path, pg_database: str, google: Google
) -> None:
    fake = google.fake
    fake.add_spreadsheet(SID, {"Sheet1": []})  # the sink adds the Lines sheet
    await sql(pg_database, """
        CREATE TABLE lines (order_id integer, line integer, sku text, qty integer, PRIMARY KEY (order_id, line));
        INSERT INTO lines SELECT g / 3, g % 3, 's' || g, g FROM generate_series(3, 62) g;
    """)  # fmt: skip
    name = "gsheets_keyless_" + pg_database.rsplit("_", 1)[-1]  # a slot of its own (slots are per server)

    def sheet_rows() -> list[tuple[Any, ...]]:
        """Every data row as (order_id, line, sku, qty, _tidesync_id), duplicates kept; sorted."""
        values = fake.values(SID, "Lines") if any(s.title == "Lines" for s in fake.books[SID].sheets) else []
        if not values or any(n not in values[0] for n in LINE):
            return []
        cols = [values[0].index(n) for n in LINE]
        return sorted(tuple((r + [""] * len(values[0]))[c] for c in cols) for r in values[1:])

    async def matches() -> bool:
        async with await psycopg.AsyncConnection.connect(pg_database) as conn:
            cur = await conn.execute("SELECT order_id, line, sku, qty FROM lines")
            want = sorted((*r, f"[{r[0]},{r[1]}]") for r in await cur.fetchall())
        return sheet_rows() == want  # each row once, its composite key as JSON in _tidesync_id

    async def run(pipeline: str, changes: str | None = None) -> None:
        config = tmp_path / f"{pipeline}.yaml"
        config.write_text(KEYLESS.format(tmp=tmp_path, name=pipeline, dsn=pg_database, sid=SID, key=google.key,
                                         url=google.url))  # fmt: skip
        log = tmp_path / f"{pipeline}.log"
        proc = start_engine(config, log)

        async def same() -> bool:
            assert proc.poll() is None, log.read_text()[-4000:]
            return await matches()

        try:
            await eventually(same, timeout=30, interval=0.1, message="the snapshot in the sheet")
            if changes is not None:
                await sql(pg_database, changes)
                await eventually(same, timeout=30, interval=0.1, message="every change in the sheet")
        finally:
            try:
                await asyncio.to_thread(stop_engine, proc, log)
            finally:
                if proc.poll() is None:
                    await asyncio.to_thread(kill_engine, proc)

    await run(name + "_a", """
        UPDATE lines SET qty = qty * 100 WHERE line = 1;
        UPDATE lines SET sku = 'renamed' WHERE order_id = 5 AND line = 2;
        DELETE FROM lines WHERE order_id IN (2, 10);
        INSERT INTO lines VALUES (2, 0, 'again', 1), (99, 0, 'new', 7);
    """)  # fmt: skip
    assert fake.values(SID, "Lines")[0] == list(LINE)
    assert fake.hidden_columns(SID, "Lines") == {4}  # E, the id column

    # A new pipeline into the same sheet snapshots every row again: each lands on its row, none is added.
    await sql(pg_database, "UPDATE lines SET sku = 'while stopped' WHERE order_id = 99")
    await run(name + "_b")
    rows = sheet_rows()
    assert len(rows) == len(fake.values(SID, "Lines")) - 1 == 56
    assert "while stopped" in {r[2] for r in rows}
    assert fake.hidden_columns(SID, "Lines") == {4}
    assert structure_requests(fake).count("updateDimensionProperties") == 1  # hidden once, when it was made
