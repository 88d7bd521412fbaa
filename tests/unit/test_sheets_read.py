"""Reading csv files as tables: the sniffed delimiter, Excel's quoting, a byte-order mark, a cut-short file."""

from __future__ import annotations

import io

import openpyxl
import pytest

from tidesync.sheets.read import Unreadable, parse


def test_semicolons_quotes_and_a_byte_order_mark() -> None:
    data = '\ufeffid;name;note\n1;"Smith; J.";"say ""hi"""\n2;Lee;\n'.encode()
    table = parse(data, "csv", name="people")
    assert table.header == ("id", "name", "note") and table.first_row == 2
    assert table.rows == [["1", "Smith; J.", 'say "hi"'], ["2", "Lee", ""]]


def test_one_column_and_a_given_delimiter() -> None:
    assert parse(b"id\n1\n2\n", "csv", name="x").rows == [["1"], ["2"]]
    assert parse(b"a|b\n1|2\n", "csv", name="x", delimiter="|").rows == [["1", "2"]]


def test_a_file_cut_mid_record_is_unreadable_but_a_short_last_line_with_a_newline_is_not() -> None:
    with pytest.raises(Unreadable, match="cut short"):
        parse(b"id,name,qty\n1,a,5\n2,b", "csv", name="x")
    assert parse(b"id,name,qty\n1,a,5\n2,b\n", "csv", name="x").rows[-1] == ["2", "b"]
    assert parse(b"id,name,qty\n1,a,5\n2,b,7", "csv", name="x").rows[-1] == ["2", "b", "7"]


def test_not_a_workbook_a_missing_sheet_and_an_empty_file_are_unreadable() -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Customers"
    ws.append(["id"])
    buf = io.BytesIO()
    wb.save(buf)
    assert parse(buf.getvalue(), "xlsx", name="x", sheet="Customers").header == ("id",)
    with pytest.raises(Unreadable, match="no sheet named 'Leads' \\(sheets: Customers\\)"):
        parse(buf.getvalue(), "xlsx", name="x", sheet="Leads")
    with pytest.raises(Unreadable, match="not a complete workbook"):
        parse(buf.getvalue()[:300], "xlsx", name="x")
    with pytest.raises(Unreadable, match="the file is empty"):
        parse(b"", "csv", name="x")
