"""Cell typing of the csv/xlsx sources and sinks: inference, declared types, per-cell errors, key matching."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tidesync.sheets.diff import diff
from tidesync.sheets.read import parse
from tidesync.sheets.table import Table, Typer, column_letter
from tidesync.sheets.types import CellError, canonical, convert, from_csv, from_xlsx, to_text, to_xlsx


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", None),
        ("0", 0),
        ("-12", -12),
        ("42", 42),
        ("0123", "0123"),  # a phone number keeps its leading zero: text
        ("00", "00"),
        ("1.50", Decimal("1.50")),
        ("-0.1", Decimal("-0.1")),
        ("1e5", "1e5"),
        ("1,234", "1,234"),
        ("true", True),
        ("FALSE", False),
        ("yes", "yes"),
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2024-02-30", "2024-02-30"),
        ("2024-01-02T03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02 03:04", dt.datetime(2024, 1, 2, 3, 4)),
        ("2024-01-02T03:04:05+02:00", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
        ("20240102", 20240102),
        ("abc", "abc"),
    ],
)
def test_csv_cells_are_inferred_exactly(text: str, value: object) -> None:
    got = from_csv(text)
    assert got == value and type(got) is type(value)


def test_xlsx_cells_keep_their_stored_type() -> None:
    assert from_xlsx("") is None
    assert from_xlsx(3.0) == 3 and type(from_xlsx(3.0)) is int
    assert from_xlsx(0.1) == Decimal("0.1")
    assert from_xlsx("0123") == "0123"
    assert from_xlsx(True) is True
    assert from_xlsx(dt.date(2024, 1, 1)) == dt.date(2024, 1, 1)


@pytest.mark.parametrize(
    ("value", "kind", "want"),
    [
        ("12", "integer", 12),
        (Decimal("12"), "integer", 12),
        ("1.25", "number", Decimal("1.25")),
        ("7", "number", 7),
        ("1.25", "decimal", Decimal("1.25")),
        ("2.5", "float", 2.5),
        ("yes", "bool", True),
        ("0", "bool", False),
        ("2024-01-02", "date", dt.date(2024, 1, 2)),
        (dt.datetime(2024, 1, 2), "date", dt.date(2024, 1, 2)),
        ("2024-01-02 10:00:00", "datetime", dt.datetime(2024, 1, 2, 10)),
        (123, "text", "123"),
        ("0123", "text", "0123"),
        (None, "integer", None),
    ],
)
def test_declared_types_convert(value: object, kind: str, want: object) -> None:
    got = convert(value, kind)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("abc", "number", "'abc' is not a number"),
        ("abc", "decimal", "'abc' is not a number"),
        ("1.5", "integer", "'1.5' is not an integer"),
        (True, "number", "'True' is not a number"),
        ("maybe", "bool", "'maybe' is not a boolean"),
        ("02/01/2024", "date", "'02/01/2024' is not a date"),
        (dt.datetime(2024, 1, 2, 3), "date", "has a time of day"),
        ("NaN", "number", "'NaN' is not a number"),
    ],
)
def test_declared_types_refuse_what_does_not_fit(value: object, kind: str, message: str) -> None:
    with pytest.raises(CellError, match=message):
        convert(value, kind)


def test_a_bad_cell_is_rejected_with_its_address_and_the_rest_flow() -> None:
    table = Table(
        "xlsx",
        "Sheet1",
        ("id", "name", "phone", "qty"),
        [[1.0, "a", "0123", 5.0], [2.0, "b", "", "abc"], ["", "orphan", "", 1.0], [1.0, "dup", "", 2.0]],
        2,
        "d",
    )
    records = Typer(("id",), {"qty": "number"}).records(table)
    assert records.rows == {(1,): {"id": 1, "name": "a", "phone": "0123", "qty": 5}}
    reasons = [r.reason for r in records.rejects]
    assert reasons == [
        "Sheet1!D3: 'abc' is not a number",
        "Sheet1!A4: the key column 'id' is empty",
        "Sheet1!A5: duplicate key [1] (first in row 2)",
    ]
    assert records.rejects[0].key == (2,) and records.rejects[0].cells["qty"] == "abc"


def test_rows_without_a_key_are_identified_by_fingerprint() -> None:
    table = Table("csv", "s", ("a", "b"), [["1", "x"], ["1", "x"], ["2", "y"], ["", ""]], 2, "d")
    rows = Typer(None, {}).records(table).rows
    assert len(rows) == 3  # the blank row is skipped; identical rows are two records
    first, second, _ = rows
    assert second[0] == first[0] + "#2"


def test_unchanged_raw_rows_reuse_their_typed_row() -> None:
    typer = Typer(("id",), {})
    t1 = Table("xlsx", "s", ("id", "v"), [[1.0, 1.0], [2.0, "x"]], 2, "d1")
    t2 = Table("xlsx", "s", ("id", "v"), [[1.0, True], [2.0, "x"]], 2, "d2")  # 1.0 == True, but not the same cell
    a, b = typer.records(t1).rows, typer.records(t2).rows
    assert a[(2,)] is b[(2,)]
    assert a[(1,)] is not b[(1,)] and b[(1,)]["v"] is True


def test_unchanged_csv_records_reuse_their_typed_row_and_edited_ones_are_typed_again() -> None:
    typer = Typer(("id",), {})
    a = typer.records(parse(b'id,v\n1,x\n2,"y"\n3,z\n', "csv", name="s")).rows
    b = typer.records(parse(b'id,v\n1,x\n2,"y"\n3,7\n', "csv", name="s")).rows
    assert a[(1,)] is b[(1,)] and a[(2,)] is b[(2,)]
    assert a[(3,)] == {"id": 3, "v": "z"} and b[(3,)] == {"id": 3, "v": 7}
    renamed = typer.records(parse(b'id,w\n1,x\n2,"y"\n3,7\n', "csv", name="s")).rows
    assert renamed[(1,)] == {"id": 1, "w": "x"}  # the same cells under another header name another column


def test_a_duplicate_csv_key_is_rejected_with_the_row_it_first_came_in_every_read() -> None:
    typer = Typer(("id",), {})
    for _ in range(2):  # the second read finds the rows again by their text
        records = typer.records(parse(b"id,v\n1,a\n2,b\n1,c\n3,d\n2,b\n", "csv", name="s"))
        assert list(records.rows) == [(1,), (2,), (3,)] and records.rows[(1,)]["v"] == "a"
        assert [r.reason for r in records.rejects] == [
            "s!A4: duplicate key [1] (first in row 2)",
            "s!A6: duplicate key [2] (first in row 3)",
        ]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_identical_rows_without_a_key_keep_their_keys_from_read_to_read(fmt: str) -> None:
    typer = Typer(None, {})
    table = (
        parse(b"a,b\n1,x\n1,x\n2,y\n", "csv", name="s")
        if fmt == "csv"
        else Table("xlsx", "s", ("a", "b"), [[1.0, "x"], [1.0, "x"], [2.0, "y"]], 2, "d")
    )
    first, second = typer.records(table).rows, typer.records(table).rows
    assert list(first) == list(second) and len(first) == 3
    assert diff(first, second) == []


def test_values_to_cells_and_keys_across_formats() -> None:
    assert to_text(Decimal("1.50")) == "1.50" and to_text(True) == "true" and to_text(None) == ""
    assert to_text(dt.date(2024, 1, 2)) == "2024-01-02"
    aware = dt.datetime(2024, 1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert to_xlsx(aware) == dt.datetime(2024, 1, 2, 1)
    assert canonical(5) == canonical(5.0) == canonical("5") == canonical(Decimal("5.00")) == "5"
    assert canonical("0123") == "0123" != canonical(123)
    assert column_letter(0) == "A" and column_letter(25) == "Z" and column_letter(26) == "AA"
