"""A sheet sink without ``key:``: rows found by a ``_tidesync_id`` column (hidden in xlsx) holding the event's key.

Driven in-process over real files and a SQLite state store.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from pydantic import ValidationError

from tidesync.config import load_config_text
from tidesync.event import ChangeEvent, Key
from tidesync.protocols import Context
from tidesync.sheets.config import ID_COLUMN, SheetSinkConfig
from tidesync.sheets.gsheets_config import GSheetsSinkConfig
from tidesync.sheets.sink import SheetSink, row_id
from tidesync.state import open_state_store


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="sheets", name="sink", state=store)
    await store.close()


def event(op: str, key: Key, pos: int, changed: tuple[str, ...] | None = None, **row: Any) -> ChangeEvent:
    after = row if op != "delete" else None
    return ChangeEvent("orders", key, op, after=after, changed=changed, position=(pos,))


def xlsx_rows(path: Path) -> list[list[Any]]:
    ws = openpyxl.load_workbook(path)["Orders"]
    return [[c.value for c in row] for row in ws.iter_rows()]


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_sink_without_key_validates_and_its_ids_are_the_event_keys() -> None:
    assert SheetSinkConfig.model_validate({"type": "xlsx", "path": "out.xlsx"}).key is None
    assert SheetSinkConfig.model_validate({"type": "csv", "path": "out.csv", "key": ["id"]}).key == ["id"]
    with pytest.raises(ValidationError, match="mark_column"):
        SheetSinkConfig.model_validate({"type": "csv", "path": "o.csv", "deletes": "mark", "mark_column": ID_COLUMN})
    assert row_id((5,)) == 5 and row_id(("a-1",)) == "a-1"
    assert row_id((7, "eu")) == '[7,"eu"]'  # composite: JSON
    assert row_id((2**60,)) == f"[{2**60}]"  # a double cannot hold it exactly: JSON text
    assert row_id((True,)) == "[true]"


async def test_keyless_xlsx_upserts_and_deletes_by_a_hidden_id_column(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "orders.xlsx"
    sink = SheetSink(SheetSinkConfig.model_validate({"type": "xlsx", "path": str(path), "sheet": "Orders"}))
    await sink.open(ctx)
    await sink.write(
        [
            event("insert", (7, "eu"), 1, id=7, region="eu", qty=1),
            event("insert", (7, "us"), 2, id=7, region="us", qty=2),  # same id, another region: its own row
            event("insert", (8, "eu"), 3, id=8, region="eu", qty=3),
            event("insert", (9, "eu"), 4, id=9, region="eu", qty=4),
        ]
    )
    assert xlsx_rows(path) == [
        ["id", "region", "qty", ID_COLUMN],  # the id column after the fields
        [7, "eu", 1, '[7,"eu"]'],
        [7, "us", 2, '[7,"us"]'],
        [8, "eu", 3, '[8,"eu"]'],
        [9, "eu", 4, '[9,"eu"]'],
    ]
    ws = openpyxl.load_workbook(path)["Orders"]
    assert ws.column_dimensions["D"].hidden and not ws.column_dimensions["C"].hidden

    # A person edits a cell and adds a column; the sink's next writes keep both and find rows by the hidden id.
    wb = openpyxl.load_workbook(path)
    wb["Orders"]["E1"], wb["Orders"]["E3"] = "note", "call back"
    wb.save(path)
    await sink.write(
        [
            event("update", (7, "us"), 5, ("qty",), id=7, region="us", qty=20),
            event("delete", (7, "eu"), 6),
            event("update", (9, "eu"), 7, ("qty", ID_COLUMN), id=9, region="eu", qty=40, **{ID_COLUMN: "x"}),
            event("insert", (10, "eu"), 8, id=10, region="eu", qty=5),
        ]
    )
    assert xlsx_rows(path) == [
        ["id", "region", "qty", ID_COLUMN, "note"],
        [7, "us", 20, '[7,"us"]', "call back"],  # moved up a row with its note
        [8, "eu", 3, '[8,"eu"]', None],
        [9, "eu", 40, '[9,"eu"]', None],  # an event's own _tidesync_id field is not written
        [10, "eu", 5, '[10,"eu"]', None],
    ]
    assert openpyxl.load_workbook(path)["Orders"].column_dimensions["D"].hidden  # still hidden after a rewrite

    # A re-delivery (replayed) and a re-snapshot by a new pipeline land on the same rows: no duplicates.
    again = [
        event("insert", (7, "us"), 1, id=7, region="us", qty=20),
        event("insert", (8, "eu"), 2, id=8, region="eu", qty=3),
        event("insert", (9, "eu"), 3, id=9, region="eu", qty=40),
        event("insert", (10, "eu"), 4, id=10, region="eu", qty=5),
    ]
    await sink.write(again, replay=True)
    fresh = SheetSink(SheetSinkConfig.model_validate({"type": "xlsx", "path": str(path), "sheet": "Orders"}))
    await fresh.open(Context(pipeline="other", name="sink", state=ctx.state))
    await fresh.write(again)
    assert len(xlsx_rows(path)) == 5
    assert [r[3] for r in xlsx_rows(path)[1:]] == ['[7,"us"]', '[8,"eu"]', '[9,"eu"]', '[10,"eu"]']

    await fresh.write([ChangeEvent("orders", (), "truncate", position=(9,))])
    assert xlsx_rows(path) == [["id", "region", "qty", ID_COLUMN, "note"]]


async def test_keyless_csv_has_a_plain_last_id_column_and_marks_deletes(tmp_path: Path, ctx: Context) -> None:
    path = tmp_path / "orders.csv"
    sink = SheetSink(SheetSinkConfig.model_validate({"type": "csv", "path": str(path), "deletes": "mark"}))
    await sink.open(ctx)
    await sink.write([event("insert", (i,), i, id=i, name=f"n{i}") for i in (1, 2, 3)])
    assert csv_rows(path) == [["id", "name", ID_COLUMN], ["1", "n1", "1"], ["2", "n2", "2"], ["3", "n3", "3"]]
    await sink.write([event("delete", (2,), 4), event("update", (3,), 5, ("name",), id=3, name="three")])
    assert csv_rows(path) == [
        ["id", "name", ID_COLUMN, "_deleted"],
        ["1", "n1", "1"],
        ["2", "n2", "2", "true"],
        ["3", "three", "3", ""],  # an upsert clears the mark cell
    ]
    await sink.write([event("insert", (2,), 6, id=2, name="back")])  # upserted by id: the mark cleared
    assert csv_rows(path)[2] == ["2", "back", "2", ""]
    assert len(csv_rows(path)) == 4


def test_a_gsheets_sink_without_key_validates(tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text("{}")
    sink = {"type": "gsheets", "spreadsheet_id": "1AbC", "sheet": "Lines", "credentials": f"${{file:{key}}}"}
    assert GSheetsSinkConfig.model_validate(sink).key is None
    assert GSheetsSinkConfig.model_validate({**sink, "key": ["id"]}).key == ["id"]
    with pytest.raises(ValidationError, match="mark_column"):
        GSheetsSinkConfig.model_validate({**sink, "deletes": "mark", "mark_column": ID_COLUMN})
    with pytest.raises(ValidationError, match="key"):
        GSheetsSinkConfig.model_validate({**sink, "key": []})
    source = "{type: sqlite, path: " + str(tmp_path / "a.db") + ", tables: [lines]}"
    text = f"pipelines:\n  - name: out\n    source: {source}\n    sink: {json.dumps(sink)}\n"
    (spec,) = load_config_text(text).pipelines  # the whole config: the registry's model for type: gsheets
    assert isinstance(spec.sink, GSheetsSinkConfig) and spec.sink.key is None
