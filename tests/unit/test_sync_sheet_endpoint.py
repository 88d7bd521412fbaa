"""SheetEndpoint: the sync endpoint contract on a real csv or xlsx file (outcomes, values as cells store them)."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from tidesync.errors import PermanentError
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.endpoint import SheetEndpoint, cell_value
from tidesync.sync.endpoint import DeleteOp, FieldWrite, InsertOp, UpdateOp


def make_xlsx(path: Path, rows: list[list[object]], sheet: str = "People") -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet
    ws.append(["id", "name", "score", "note"])
    for r in rows:
        ws.append(r)
    other = wb.create_sheet("Other")
    other["A1"] = "kept"
    wb.save(path)


def person_edit(path: Path, row: int, column: int, value: object, sheet: str = "People") -> None:
    """What a person's editor does: load, set a cell, save to a temporary file and rename it over the file."""
    wb = load_workbook(path)
    wb[sheet].cell(row=row, column=column, value=value)
    tmp = path.with_name(f".~{path.name}")
    wb.save(tmp)
    os.replace(tmp, path)


def cells(path: Path, sheet: str = "People") -> list[tuple[object, ...]]:
    ws = load_workbook(path)[sheet]
    return [tuple(r) for r in ws.iter_rows(min_row=2, values_only=True)]


@pytest.fixture
def xlsx(tmp_path: Path) -> tuple[Path, SheetEndpoint]:
    path = tmp_path / "people.xlsx"
    make_xlsx(path, [[1, "ada", 10, None], [2, "bob", 12.5, "x"], [3, "cy", 0, None]])
    cfg = SheetSourceConfig.model_validate({"type": "xlsx", "path": str(path), "key": ["id"]})
    return path, SheetEndpoint(cfg, ["id"], sheet="People")


async def test_update_outcomes_per_field(xlsx: tuple[Path, SheetEndpoint]) -> None:
    path, ep = xlsx
    await ep.open()
    res = await ep.apply(
        [
            UpdateOp(
                (1,),
                (
                    FieldWrite("name", "ada l", expected="ada"),  # ok
                    FieldWrite("score", 11, expected=99),  # conflict: the cell holds 10
                    FieldWrite("note", None, expected="gone"),  # already: the cell is empty
                ),
            ),
            UpdateOp((2,), (FieldWrite("score", Decimal("13.75"), expected=Decimal("12.50")),)),  # 12.5 == 12.50
            UpdateOp((9,), (FieldWrite("name", "z", expected=None),)),  # missing
            UpdateOp((3,), (FieldWrite("name", "forced", expected="not cy", conditional=False),)),  # unconditional
        ]
    )
    assert [(r.status, dict(r.columns)) for r in res] == [
        ("ok", {"name": "ok", "score": "conflict", "note": "already"}),
        ("ok", {"score": "ok"}),
        ("missing", {"name": "missing"}),
        ("ok", {"name": "ok"}),
    ]
    assert cells(path) == [(1, "ada l", 10, None), (2, "bob", 13.75, "x"), (3, "forced", 0, None)]
    assert load_workbook(path)["Other"]["A1"].value == "kept"  # the rest of the workbook is kept
    assert ep.rewrites == 1  # one save for the whole call


async def test_a_write_replayed_after_a_crash_is_already(xlsx: tuple[Path, SheetEndpoint]) -> None:
    _, ep = xlsx
    await ep.open()
    op = UpdateOp((2,), (FieldWrite("score", Decimal("20.10"), expected=Decimal("12.5")),))
    assert (await ep.apply([op]))[0].columns == {"score": "ok"}
    again = SheetEndpoint(ep.config, ["id"], sheet="People")  # a new process: nothing cached
    await again.open()
    assert (await again.apply([op]))[0].columns == {"score": "already"}  # 20.1 read back from the cell
    assert again.rewrites == 0
    rows = await again.fetch([(2,)])
    assert rows[(2,)]["score"] == Decimal("20.1")


async def test_a_person_edit_between_calls_is_compared_not_overwritten(xlsx: tuple[Path, SheetEndpoint]) -> None:
    path, ep = xlsx
    await ep.open()
    assert (await ep.fetch([(1,)]))[(1,)]["name"] == "ada"
    person_edit(path, 2, 2, "ada (person)")
    res = await ep.apply([UpdateOp((1,), (FieldWrite("name", "ada (sync)", expected="ada"),))])
    assert res[0].columns == {"name": "conflict"}
    assert cells(path)[0][1] == "ada (person)"


async def test_insert_exists_and_delete_conflict(xlsx: tuple[Path, SheetEndpoint]) -> None:
    path, ep = xlsx
    await ep.open()
    res = await ep.apply(
        [
            InsertOp({"id": 4, "name": "dee", "score": 1, "new_col": "n"}, key=(4,)),
            InsertOp({"id": 1, "name": "other"}, key=(1,)),
            InsertOp({"name": "nokey"}, key=None),
            DeleteOp((2,), expected={"name": "bob", "score": Decimal("12.5")}),
            DeleteOp((3,), expected={"name": "someone else"}),
            DeleteOp((7,)),
        ]
    )
    assert [r.status for r in res] == ["ok", "exists", "failed", "ok", "conflict", "missing"]
    assert res[1].row is not None and res[1].row["name"] == "ada"
    assert "makes no keys" in res[2].error
    ws = load_workbook(path)["People"]
    assert [c.value for c in ws[1]] == ["id", "name", "score", "note", "new_col"]  # a column added for a new field
    assert cells(path) == [(1, "ada", 10, None, None), (3, "cy", 0, None, None), (4, "dee", 1, None, "n")]
    assert [r["id"] for r in await ep.scan()] == [1, 3, 4]
    found = await ep.find({"name": "dee"})
    assert [k for k, _ in found] == [(4,)]


async def test_a_value_a_cell_cannot_hold_fails_its_op_alone(xlsx: tuple[Path, SheetEndpoint]) -> None:
    path, ep = xlsx
    await ep.open()
    res = await ep.apply(
        [
            UpdateOp((1,), (FieldWrite("name", "bad\x01", expected="ada"), FieldWrite("score", 5, expected=10))),
            UpdateOp((3,), (FieldWrite("score", 7, expected=0),)),
        ]
    )
    assert res[0].status == "failed" and res[0].columns == {"name": "failed", "score": "failed"}
    assert res[1].columns == {"score": "ok"}
    assert cells(path)[0] == (1, "ada", 10, None) and cells(path)[2] == (3, "cy", 7, None)


async def test_csv_side_types_cells_as_the_source(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("id,name,price,day\n1,a,1.50,2024-01-02\n2,b,2,\n")
    cfg = SheetSourceConfig.model_validate({"type": "csv", "path": str(path), "key": ["id"]})
    ep = SheetEndpoint(cfg, ["id"])
    await ep.open()
    assert await ep.fetch([(1,)]) == {
        (1,): {"id": 1, "name": "a", "price": Decimal("1.50"), "day": dt.date(2024, 1, 2)}
    }
    res = await ep.apply(
        [
            UpdateOp((1,), (FieldWrite("price", Decimal("1.75"), expected=Decimal("1.5")),)),
            UpdateOp((2,), (FieldWrite("day", dt.date(2025, 5, 6), expected=None),)),
            InsertOp({"id": 3, "name": "c"}, key=(3,)),
            DeleteOp((1,), expected={"name": "a"}),
        ]
    )
    assert [r.status for r in res] == ["ok", "ok", "ok", "ok"]
    assert path.read_text() == "id,name,price,day\n2,b,2,2025-05-06\n3,c\n"  # short rows as the sheet sink writes them


async def test_open_needs_the_file_and_the_key_column(tmp_path: Path) -> None:
    cfg = SheetSourceConfig.model_validate({"type": "csv", "path": str(tmp_path / "none.csv"), "key": ["id"]})
    with pytest.raises(PermanentError, match="does not exist"):
        await SheetEndpoint(cfg, ["id"]).open()
    (tmp_path / "nokey.csv").write_text("name\nx\n")
    cfg = SheetSourceConfig.model_validate({"type": "csv", "path": str(tmp_path / "nokey.csv"), "key": ["id"]})
    with pytest.raises(PermanentError, match="no column named 'id'"):
        await SheetEndpoint(cfg, ["id"]).open()


def test_cell_value_compares_as_the_cell_stores() -> None:
    assert cell_value(5, "xlsx") == cell_value("5", "xlsx") == cell_value(Decimal("5.0"), "xlsx")
    assert cell_value(Decimal("0.1"), "xlsx") == cell_value(0.1, "xlsx")
    aware = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert cell_value(aware, "xlsx") == cell_value(dt.datetime(2024, 1, 2, 1, 4), "xlsx")
    assert cell_value("", "csv") is None and cell_value(None, "xlsx") is None
    assert cell_value("None", "csv") is not None
    assert cell_value(True, "csv") != cell_value(1, "csv")


SHEET_SYNC = """\
state: sqlite:///state.db
syncs:
  - name: stock
    a:
      source: {{type: postgres, dsn: "postgresql://x@h/shop", tables: [items], snapshot: never}}
      table: items
      key: [id]
    b:
      source: {source}
{extra}      key: [id]
    fields: {fields}
"""


def sheet_sync(source: str, extra: str = "", fields: str = "{id: id, name: name}") -> str:
    return SHEET_SYNC.format(source=source, extra=extra, fields=fields)


def test_a_sheet_side_builds_a_sheet_endpoint_without_dsn_or_origin(tmp_path: Path) -> None:
    from tidesync.config import load_config_text
    from tidesync.sync.build import build_parts, side_entity, side_source_config

    book = tmp_path / "stock.xlsx"
    spec = load_config_text(
        sheet_sync(f'{{type: xlsx, path: "{book}", key: [id]}}', extra="      table: Items\n")
    ).sync("stock")
    parts = build_parts(spec)
    ep = parts.endpoints["b"]
    assert isinstance(ep, SheetEndpoint) and ep.sheet == "Items" and ep.key == ("id",)
    assert parts.origins == {"a": "tidesync_stock_a", "b": None}
    assert side_source_config(spec.b_source, spec.config.b).sheet == "Items"  # the source reads that sheet
    assert side_entity(spec.config.b, spec.b_source) == "stock"  # the entity the sheet source gives its events
    csv_spec = load_config_text(sheet_sync(f'{{type: csv, path: "{tmp_path / "s.csv"}", key: [id]}}')).sync("stock")
    assert isinstance(build_parts(csv_spec).endpoints["b"], SheetEndpoint)


@pytest.mark.parametrize(
    ("source", "extra", "fields", "error"),
    [
        ("{type: xlsx, path: s.xlsx, key: [id]}", '      dsn: "sqlite:///x.db"\n', None, "remove dsn"),
        ("{type: csv, path: s.csv, key: [id]}", "      table: s\n", None, "leave table: out"),
        ("{type: xlsx, path: s.xlsx, sheet: A, key: [id]}", "      table: B\n", None, "names the sheet"),
        ("{type: xlsx, path: s.xlsx}", "", None, "needs the source's key"),
        ("{type: xlsx, path: s.xlsx, key: [sku]}", "", None, "needs the source's key"),
        ("{type: xlsx, path: s.xlsx, key: [id]}", "", "{name: name}", "makes no keys"),
        ("{type: sqlite, path: s.db, tables: [items]}", "", None, "table: the table writes go to is required"),
    ],
)
def test_validate_checks_a_sheet_side(source: str, extra: str, fields: str | None, error: str) -> None:
    from tidesync.config import load_config_text
    from tidesync.errors import ConfigError

    with pytest.raises(ConfigError, match=error):
        load_config_text(sheet_sync(source, extra, fields or "{id: id, name: name}"))
