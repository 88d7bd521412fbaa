"""Reading csv files as tables: the sniffed delimiter, Excel's quoting, a byte-order mark, a cut-short file."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.sheets.csv_records import CsvRows, split_records
from tidesync.sheets.read import Unreadable, _with_delimiter, parse


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


# Pieces that stress the quote-free fast path and its hand-over to csv: quotes, line breaks of all kinds,
# NULs, delimiters of every sniffable kind, backslashes (no escape character in Excel's dialect).
_PIECES = st.sampled_from(["a", "b", ",", ";", "|", "\t", '"', '""', 'x"y', "\n", "\r", "\r\n", " ", "\0", "\\"])


@given(st.lists(_PIECES, max_size=40).map("".join), st.sampled_from([",", ";", "|", "\t"]))
def test_records_are_exactly_what_csv_reads(text: str, delimiter: str) -> None:
    dialect = _with_delimiter(delimiter)
    want = list(csv.reader(io.StringIO(text, newline=""), dialect))
    records = split_records(text, dialect)
    assert list(records) == want and len(records) == len(want)
    assert [records[i] for i in range(-len(want), len(want))] == want + want


@given(st.lists(_PIECES, max_size=30).map("".join))
def test_a_field_over_csvs_size_limit_fails_as_csv_fails(text: str) -> None:
    dialect = _with_delimiter(",")
    limit = csv.field_size_limit(3)
    try:
        try:
            want: object = list(csv.reader(io.StringIO(text, newline=""), dialect))
        except csv.Error as exc:
            want = str(exc)
        try:
            got: object = list(split_records(text, dialect))
        except csv.Error as exc:
            got = str(exc)
    finally:
        csv.field_size_limit(limit)
    assert got == want


def test_quote_free_records_are_kept_as_their_text_and_quoted_ones_span_lines() -> None:
    table = parse(b'id,note\r\n1,plain\r\n2,"two\nlines"\r\n3,\r\n', "csv", name="x")
    assert isinstance(table.rows, CsvRows)
    assert table.rows.texts == ["1,plain", '2,"two\nlines"\r\n', "3,"]
    assert table.rows == [["1", "plain"], ["2", "two\nlines"], ["3", ""]]
