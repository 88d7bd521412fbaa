"""The csv, xlsx and gsheets sources and sinks under the conformance suite (files in the test's directory;
for gsheets, the fake Google API in :mod:`tidesync.testing.gsheets`, served in a thread).

Sources: the harness keeps the sheet's rows in memory and rewrites the whole
file on every change, as a person saving it would (every other save by
rename-and-replace). A file source sees the file as it is when it reads it,
so changes between two reads coalesce (``every_change = False``). Its
snapshot (shadow rows) commits with each checkpoint, which
:class:`~tests.conformance.poll_harness.EngineCommits` does in the engine's place.

Sinks: ``rows()`` reads the file back with the source's own reader, and
``set_column`` edits it behind the sink's back. A transient fault puts a
directory where the file is (the file moved aside), so neither loading nor
replacing it can succeed until healed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import openpyxl

from tests.conformance.poll_harness import EngineCommits
from tidesync.protocols import Sink, Source
from tidesync.sheets.config import SheetSinkConfig, SheetSourceConfig
from tidesync.sheets.read import parse
from tidesync.sheets.sink import SheetSink
from tidesync.sheets.source import SheetSource
from tidesync.sheets.table import Typer

HEADER = ["id", "name", "qty"]
Rows = dict[tuple[Any, ...], dict[str, Any]]


def write_sheet(path: Path, fmt: str, rows: list[list[Any]], *, replace: bool) -> None:
    target = path.with_name(".~" + path.name) if replace else path
    if fmt == "xlsx":
        wb = openpyxl.Workbook()
        ws = wb.active
        assert ws is not None
        ws.title = "items"
        ws.append(HEADER)
        for row in rows:
            ws.append(row)
        wb.save(target)
    else:
        with open(target, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([HEADER, *rows])
    if replace:
        os.replace(target, path)


def read_sheet(path: Path, fmt: str, sheet: str | None) -> Rows:
    table = parse(path.read_bytes(), "xlsx" if fmt == "xlsx" else "csv", name=path.stem, sheet=sheet)
    return dict(Typer(("id",), {}).records(table).rows)


class _SheetSourceHarness:
    fmt = "csv"
    entity = "items"
    every_change = False
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / f"items.{self.fmt}"
        self.rows: dict[int, list[Any]] = {}
        self.saves = 0
        self._save()

    def _save(self) -> None:
        self.saves += 1
        write_sheet(self.path, self.fmt, [self.rows[k] for k in sorted(self.rows)], replace=self.saves % 2 == 0)

    def make_source(self) -> Source:
        sheet = {"sheet": "items"} if self.fmt == "xlsx" else {}
        config = SheetSourceConfig.model_validate(
            {"type": self.fmt, "path": str(self.path), "key": ["id"], "columns": {"qty": "integer"},
             "settle": 0.0, "poll_interval": 0.01, **sheet}
        )  # fmt: skip
        return EngineCommits(SheetSource(config))

    def insert(self, ids: range) -> None:
        for i in ids:
            self.rows[i] = [i, f"item {i}", 0]
        self._save()

    def update(self, ids: range, qty: int) -> None:
        for i in ids:
            self.rows[i][2] = qty
        self._save()

    def delete(self, ids: range) -> None:
        for i in ids:
            self.rows.pop(i, None)
        self._save()

    def feed_bad_input(self, key: int) -> None:
        self.rows[key] = [key, f"item {key}", "not a number"]
        self._save()

    def cleanup(self) -> None:
        pass


class CsvSourceHarness(_SheetSourceHarness):
    fmt = "csv"


class XlsxSourceHarness(_SheetSourceHarness):
    fmt = "xlsx"


class _HeldAside:
    """The file moved aside and a directory in its place: no load or replace succeeds until healed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.aside = path.with_name(path.name + ".aside")

    def break_(self) -> None:
        if self.path.exists():
            os.rename(self.path, self.aside)
        self.path.mkdir()

    def heal(self) -> None:
        shutil.rmtree(self.path)
        if self.aside.exists():
            os.rename(self.aside, self.path)


class _SheetSinkHarness:
    fmt = "csv"
    entity = "items"
    bad_row: dict[str, Any] | None = None
    exclusions: dict[str, str] = {
        "slow_destination": "a local file rewritten in one step: there is no lock or peer that could hold a write",
    }

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "out" / f"items.{self.fmt}"

    def _config(self) -> SheetSinkConfig:
        return SheetSinkConfig(type=self.fmt, path=str(self.path), sheet="items", key=["id"])  # type: ignore[arg-type]

    def make_sink(self) -> Sink:
        return SheetSink(self._config())

    def make_faulty_sink(self) -> tuple[Sink, _HeldAside]:
        return SheetSink(self._config()), _HeldAside(self.path)

    def rows(self) -> Rows:
        if not self.path.exists():
            return {}
        return read_sheet(self.path, self.fmt, "items" if self.fmt == "xlsx" else None)

    def set_column(self, key: int, column: str, value: Any) -> None:
        if self.fmt == "xlsx":
            wb = openpyxl.load_workbook(self.path)
            ws = wb["items"]
            header = [c.value for c in ws[1]]
            for r in range(2, ws.max_row + 1):
                if ws.cell(row=r, column=header.index("id") + 1).value == key:
                    ws.cell(row=r, column=header.index(column) + 1, value=value)
            wb.save(self.path)
            return
        with open(self.path, newline="") as f:
            lines = list(csv.reader(f))
        col = lines[0].index(column)
        for line in lines[1:]:
            if line and line[lines[0].index("id")] == str(key):
                line[col] = str(value)
        with open(self.path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(lines)

    def cleanup(self) -> None:
        pass


class CsvSinkHarness(_SheetSinkHarness):
    fmt = "csv"
    exclusions = {
        **_SheetSinkHarness.exclusions,
        "bad_input": "every value has a text form, and a csv cell holds any text: there is no event it cannot write",
    }


class XlsxSinkHarness(_SheetSinkHarness):
    fmt = "xlsx"
    bad_row = {"name": "control \x01 character", "qty": 1}  # xlsx text cannot hold control characters


# --- Google Sheets: the same, against the fake API served in a thread --------------------------------

SID = "1ConformanceSheet"


class _Google:
    """The fake Sheets/Drive/token API on loopback, a service-account key for it, and a config for both sides."""

    def __init__(self, tmp: Path) -> None:
        from tests.conformance.http_harnesses import ThreadedServer
        from tidesync.testing.gsheets import FakeGSheets

        self.fake = FakeGSheets()
        self.fake.add_spreadsheet(SID, {"items": [HEADER]})
        self.server = ThreadedServer(self.fake.app)
        self.key = tmp / "sa.json"
        self.key.write_text(json.dumps(self.fake.service_account(f"{self.server.url}/token")))

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"type": "gsheets", "spreadsheet_id": SID, "sheet": "items", "key": ["id"],
                "credentials": f"${{file:{self.key}}}", "base_url": self.server.url, "drive_url": self.server.url,
                "rate_limit": {"per_second": 10_000}, "http": {"max_attempts": 2}, **extra}  # fmt: skip

    def rows(self) -> Rows:
        from tidesync.sheets.gsheets_source import table_of

        table = table_of(self.fake.values(SID, "items"), "items", 1, "")
        return dict(Typer(("id",), {}).records(table).rows)

    def stop(self) -> None:
        self.fake.release()
        self.server.stop()


class GSheetsSourceHarness:
    """A person editing the sheet in the fake: each change is one revision, read at the next check."""

    entity = "items"
    every_change = False
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.google = _Google(tmp)
        self.fake = self.google.fake

    def make_source(self) -> Source:
        from tidesync.sheets.gsheets_config import GSheetsSourceConfig
        from tidesync.sheets.gsheets_source import GSheetsSource

        conf = self.google.config(columns={"qty": "integer"}, poll_interval=0.01)
        return EngineCommits(GSheetsSource(GSheetsSourceConfig.model_validate(conf)))

    def _rows(self) -> list[list[Any]]:
        return self.fake.books[SID].sheet("items").rows

    def _set_rows(self, rows: list[list[Any]]) -> None:
        book = self.fake.books[SID]
        book.sheet("items").rows = rows
        book.touch()

    def insert(self, ids: range) -> None:
        self._set_rows(self._rows() + [[i, f"item {i}", 0] for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._set_rows([[r[0], r[1], qty] if r and r[0] in ids else r for r in self._rows()])

    def delete(self, ids: range) -> None:
        self._set_rows([r for r in self._rows() if not (r and r[0] in ids)])

    def feed_bad_input(self, key: int) -> None:
        self._set_rows([r for r in self._rows() if not (r and r[0] == key)] + [[key, f"item {key}", "not a number"]])

    def cleanup(self) -> None:
        self.google.stop()


class _Outage:
    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def break_(self) -> None:
        self.fake.outage = 503

    def heal(self) -> None:
        self.fake.outage = None


class GSheetsSinkHarness:
    entity = "items"
    bad_row: dict[str, Any] | None = {"name": "x" * 50_001, "qty": 1}  # a cell holds at most 50,000 characters
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.google = _Google(tmp)
        self.fake = self.google.fake

    def make_sink(self) -> Sink:
        from tidesync.sheets.gsheets_config import GSheetsSinkConfig
        from tidesync.sheets.gsheets_sink import GSheetsSink

        return GSheetsSink(GSheetsSinkConfig.model_validate(self.google.config()))

    def make_faulty_sink(self) -> tuple[Sink, _Outage]:
        return self.make_sink(), _Outage(self.fake)

    def make_slow(self) -> Any:
        return self.fake  # hold() / release()

    def rows(self) -> Rows:
        return self.google.rows()

    def set_column(self, key: int, column: str, value: Any) -> None:
        values = self.fake.values(SID, "items")
        col = values[0].index(column)
        for r, row in enumerate(values[1:], 2):
            if row and row[0] == key:
                self.fake.set(SID, "items", f"{chr(65 + col)}{r}", value)

    def cleanup(self) -> None:
        self.google.stop()


SOURCES = {"csv": CsvSourceHarness, "xlsx": XlsxSourceHarness, "gsheets": GSheetsSourceHarness}
SINKS = {"csv": CsvSinkHarness, "xlsx": XlsxSinkHarness, "gsheets": GSheetsSinkHarness}
