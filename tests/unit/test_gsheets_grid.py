"""The pure parts of the Google Sheets connectors: cell values both ways, the requests a batch becomes, A1 ranges."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from tidesync.sheets.gsheets_grid import GSheetsGrid
from tidesync.sheets.gsheets_source import table_of
from tidesync.sheets.table import Typer
from tidesync.testing.gsheets_model import A1, parse_a1


def grid(values: list[list[Any]]) -> GSheetsGrid:
    return GSheetsGrid(values, title="My Sheet", sheet_id=7, columns=3, key=["id"], header_row=1)


def test_values_are_written_as_cells_can_hold_them() -> None:
    g = grid([["id"]])
    assert g.check(None) == "" and g.check(True) is True and g.check(5) == 5
    assert g.check(Decimal("9.99")) == 9.99 and g.check(Decimal("0.10000000000000000001")) == "0.10000000000000000001"
    assert g.check(2**60) == str(2**60)  # beyond a double's exact integers
    assert g.check(dt.datetime(2024, 1, 15, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == "2024-01-15 10:00:00"
    assert g.check(dt.date(2024, 1, 15)) == "2024-01-15" and g.check({"a": 1}) == '{"a": 1}'
    assert g.check("=A1") == "=A1"  # sent RAW: text, never a formula
    with pytest.raises(ValueError):
        g.check(float("nan"))
    with pytest.raises(ValueError):
        g.check("x" * 50_001)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def structure(self, requests: list[dict[str, Any]], *, once: bool) -> None:
        self.calls.append(("structure", requests))

    async def write_cells(self, data: list[dict[str, Any]]) -> None:
        self.calls.append(("cells", [(d["range"], d["values"]) for d in data]))

    async def append(self, title: str, header_row: int, rows: list[list[Any]]) -> None:
        self.calls.append(("append", rows))


async def test_a_batch_becomes_at_most_four_requests_in_a_safe_order() -> None:
    g = grid([["id", "name", "qty"], [1, "a", 1], [2, "b", 2], [3, "c", 3], [4, "d", 4], [5, "e", 5]])
    assert g.index == {("1",): 2, ("2",): 3, ("3",): 4, ("4",): 5, ("5",): 6}
    g.put(2, 1, "A")
    g.put(2, 2, 10)
    g.put(6, 0, 5)
    col = g.add_column("vip")  # past the grid's 3 columns
    row = g.append()
    g.put(row, 0, 6)
    g.put(row, col, True)
    g.remove({3, 4, 6})
    assert g.index == {("1",): 2, ("4",): 3}
    api = Recorder()
    await g.flush(api)  # type: ignore[arg-type]
    assert api.calls == [
        ("structure", [{"appendDimension": {"sheetId": 7, "dimension": "COLUMNS", "length": 1}}]),
        ("cells", [("'My Sheet'!D1:D1", [["vip"]]), ("'My Sheet'!B2:C2", [["A", 10]])]),  # row 6's write: removed
        ("append", [[6, "", "", True]]),
        ("structure", [{"deleteDimension": {"range": {"sheetId": 7, "dimension": "ROWS", "startIndex": 5,
                                                      "endIndex": 6}}},
                       {"deleteDimension": {"range": {"sheetId": 7, "dimension": "ROWS", "startIndex": 2,
                                                      "endIndex": 4}}}]),  # bottom up
    ]  # fmt: skip


def test_api_cells_are_typed_like_workbook_cells() -> None:
    values = [["id", "phone", "day", "price", "ok", "at"], [1, "0123", "2024-01-15", 1.5, True, "2024-01-15 10:30:00"],
              [2.0, "123", "15/01/2024"]]  # fmt: skip
    rows = Typer(("id",), {}).records(table_of(values, "S", 1, "rev")).rows
    assert rows[(1,)] == {"id": 1, "phone": "0123", "day": dt.date(2024, 1, 15), "price": Decimal("1.5"), "ok": True,
                          "at": dt.datetime(2024, 1, 15, 10, 30)}  # fmt: skip
    assert rows[(2,)] == {"id": 2, "phone": "123", "day": "15/01/2024", "price": None, "ok": None, "at": None}


def test_a1_ranges() -> None:
    assert parse_a1("'My ''Sheet'''!A1:C") == A1("My 'Sheet'", 0, 0, None, 3)
    assert parse_a1("Customers") == A1("Customers", None, None, None, None)
    assert parse_a1("Customers!B2:D5") == A1("Customers", 1, 1, 5, 4)
    assert parse_a1("Customers!2:3") == A1("Customers", 1, None, 3, None)
