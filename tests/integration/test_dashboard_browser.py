"""The dashboard in Debian's Chromium (Playwright), during a run: sign in, watch the latency chart update,
replay a dead letter and resolve a conflict by clicking, and find the effects in the databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

from tests.integration.api_harness import SHOP, dst_rows, make_shop, running, src_insert
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.sync import decisions
from tidesync.sync.mapping import FieldMap, SideSpec
from tidesync.sync.memory import FeedSource, MemoryEndpoint, MemoryTable
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.resolve import history, list_conflicts
from tidesync.sync.rules import Rule, Rules
from tidesync.sync.store_layout import RESOLVE
from tidesync.testing import eventually

expect.set_options(timeout=15_000)  # a shared two-core machine: give the page time under load
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
SYNC = """\
syncs:
  - name: customers
    enabled: false
    a: {{source: {{type: sqlite, path: {tmp}/crm.db, tables: [customers]}}, table: customers, key: [id]}}
    b: {{source: {{type: sqlite, path: {tmp}/billing.db, tables: [accounts]}}, table: accounts, key: [id]}}
    fields: {{id: id, email: email}}
"""


class CustomersSync:
    """Sync ``customers`` between two in-memory tables, as the sync runner drives its processor."""

    def __init__(self, store: StateStore) -> None:
        self.now = 1_000.0
        self.tables = {s: MemoryTable(f"t{s}", ("id",), clock=lambda: self.now) for s in ("a", "b")}
        names = {"id": "id", "email": "email"}
        fmap = FieldMap(SideSpec("a", "ta", ("id",), names), SideSpec("b", "tb", ("id",), names), shared_keys=True)
        endpoints = {s: MemoryEndpoint(t) for s, t in self.tables.items()}
        policy = decisions.Policy(Rules(default=Rule("manual")))
        self.proc = SyncProcessor("customers", fmap, endpoints, store, policy)  # type: ignore[arg-type]
        self.sources = {s: FeedSource(t.feed) for s, t in self.tables.items()}

    async def start(self) -> None:
        await self.proc.load()
        for side, src in self.sources.items():
            await src.open(None, self.proc.positions[side])  # type: ignore[arg-type]

    async def deliver(self, side: str) -> None:
        batch = await self.sources[side].read(1000, 0)
        if batch.events:
            await self.proc.process(side, batch)  # type: ignore[arg-type]

    async def make_conflict(self) -> None:
        """A record both sides know, then the same field edited on both: the manual rule parks it."""
        self.tables["a"].insert({"id": 7, "email": "ann@old.example"})
        await self.deliver("a")
        self.now += 10
        self.tables["a"].update((7,), {"email": "ann@crm.example"})
        self.now += 1
        self.tables["b"].update((7,), {"email": "ann@billing.example"})
        await self.deliver("a")
        await self.deliver("b")


@contextlib.asynccontextmanager
async def feeding(tmp: Path) -> AsyncIterator[None]:
    """Keep changes flowing (a few rows a tick) so the per-second latency chart has new seconds."""
    stop = asyncio.Event()

    async def feed() -> None:
        n = 1000
        while not stop.is_set():
            src_insert(tmp, [(n + i, n + i, "feed") for i in range(5)])
            n += 5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)  # pacing the workload, not waiting for a result

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        stop.set()
        await task


async def last_second(page: Page) -> int:
    return int(await page.get_attribute("#latency", "data-last-second") or 0)


async def newer(page: Page, than: int) -> bool:
    return await last_second(page) > than


async def test_the_dashboard_shows_the_run_and_its_buttons_act_on_the_databases(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    text = SHOP.format(tmp=tmp_path) + SYNC.format(tmp=tmp_path) + "alerts: {interval: 200ms}\n"
    sync_store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await sync_store.open()
    sync = CustomersSync(sync_store)
    await sync.start()
    await sync.make_conflict()
    conflicts = await list_conflicts(sync_store, "customers")
    assert len(conflicts) == 1, conflicts  # the manual rule parked the field edited on both sides
    pending = conflicts[0]
    try:
        async with running(tmp_path, text, token) as run, async_playwright() as pw:
            src_insert(tmp_path, [(1, 10, "first"), (2, -5, "refused")])
            await eventually(lambda: 1 in dst_rows(tmp_path), message="row 1 applied")
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1300, "height": 1500})
                page.set_default_timeout(15_000)
                await page.goto(run.url + "/")
                await expect(page.locator("#login")).to_be_visible()
                await page.fill("#token", "wrong")
                await page.click("#login button[type=submit]")
                await expect(page.locator("#login-error")).to_have_text("That token was refused.")
                await page.fill("#token", token)
                await page.click("#login button[type=submit]")
                await expect(page.locator("#main")).to_be_visible()
                await expect(page.locator("#login")).to_be_hidden()
                await expect(page.locator("#live")).to_have_text("live", timeout=10_000)

                # The pipeline row, and the latency chart drawing new seconds as events keep coming.
                # running, with a dead letter (row 2) in the last 5 minutes
                await expect(page.locator("tr[data-pipeline=shop] .state")).to_have_text("degraded")
                async with feeding(tmp_path):
                    # (polled from here: the page's CSP forbids the eval that wait_for_function needs)
                    first = await eventually(lambda: last_second(page), timeout=15, message="a first point")
                    await eventually(lambda: newer(page, first), timeout=15, message="a newer second drawn")
                    assert int(await page.get_attribute("#latency", "data-points") or 0) >= 2

                    async def painted() -> bool:  # orange p99 pixels
                        n = await page.evaluate(
                            """() => { const c = document.querySelector('#latency');
                                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                                   let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i+2] < 80) n++;
                                   return n; }"""
                        )
                        return int(n) > 20

                    # A line joins seconds at most 2 s apart (a longer gap means no events then): on a busy machine
                    # the first points can be isolated, and the line comes with the next consecutive seconds.
                    await eventually(painted, timeout=15, message="the p99 line drawn")
                await expect(page.locator("tr[data-pipeline=shop] td").nth(2)).not_to_have_text("0.0")

                # The dead letter: replay while the destination still refuses it, then after fixing it.
                row = page.locator("#dlq tr[data-id]")
                await expect(row).to_have_count(1, timeout=10_000)
                entry_id = await row.get_attribute("data-id")
                await expect(row.locator("td").nth(7)).to_contain_text("negative amounts are refused")
                card = page.locator(f".conflict[data-id='{pending['id']}']")
                await expect(card).to_be_visible()
                await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                await row.get_by_role("button", name="Replay").click()
                await expect(page.locator("#dlq-result")).to_contain_text(
                    f"#{entry_id}: written 0, skipped 0, failed 1"
                )
                with sqlite3.connect(tmp_path / "dst.db") as conn:
                    conn.execute("DROP TRIGGER no_negative")
                await row.get_by_role("button", name="Replay").click()
                await expect(page.locator("#dlq-result")).to_have_text(f"#{entry_id}: written 1, skipped 0, failed 0")
                await expect(page.locator("#dlq tr[data-id]")).to_have_count(0)
                await expect(page.locator("tr[data-pipeline=shop] td").nth(6)).to_have_text("0")  # DLQ depth
                assert dst_rows(tmp_path)[2] == (2, -5, "refused")  # in the destination database

                # The conflict: both candidates side by side; take B.
                await expect(card.locator(".side-a pre")).to_have_text('"ann@crm.example"')
                await expect(card.locator(".side-b pre")).to_have_text('"ann@billing.example"')
                await expect(card.locator(".head")).to_contain_text('last agreed: "ann@old.example"')
                await card.get_by_role("button", name="Take B").click()
                await expect(page.locator("#conflict-result")).to_contain_text(f"{pending['id']}: took B")
                await expect(card.locator(".head")).to_contain_text("resolution requested: take b")
                # The request is in the state store; the sync applies it in its loop (here: its next turn).
                request = await sync_store.kv_get(RESOLVE, "customers/1")
                assert request is not None and request["take"] == "b" and request["by"] == "admin api"
                assert await sync.proc.apply_resolutions() == 1
                await expect(page.locator(".conflict")).to_have_count(0, timeout=10_000)
                await page.screenshot(path=str(tmp_path / "dashboard-after.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        settled = await history(sync_store, "customers")
        await sync_store.close()
    assert sync.tables["a"].rows[(7,)]["email"] == "ann@billing.example"
    assert sync.tables["b"].rows[(7,)]["email"] == "ann@billing.example"
    assert [(h["field"], h["winner"], h["value"], h["by"]) for h in settled][-1] == (
        "email", "b", "ann@billing.example", "admin api"
    )  # fmt: skip
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
