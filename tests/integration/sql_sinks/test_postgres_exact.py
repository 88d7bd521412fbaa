"""Postgres never rounds a value either: one its column cannot hold exactly fails its event.

Postgres refuses too-long strings and out-of-range numbers itself, but rounds
without a word: digits past a ``numeric(p,s)``'s scale, a numeric written into
an integer column (an assignment cast), seconds past a ``timestamp(n)``'s
precision. The sink checks those values before writing (sinks/sql/exact.py).
Each bad event reaches the dead-letter queue; the good ones land unchanged.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.sql_sinks.helpers import Dest, ev
from tests.integration.sql_sinks.test_mariadb_strict import dead_letter_writer, names_column
from tidesync.errors import PermanentError

POSTGRES = pytest.mark.parametrize("dest", ["postgres"], indirect=True)
T = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)

# (column type, a value it holds exactly, a value it would round, words of the error)
CASES = [
    ("numeric(10,2)", Decimal("1.230"), Decimal("1.234"), "fractional digits"),
    ("numeric(10,2)", "7.5", "7.505", "fractional digits"),
    ("numeric(10,2)", Decimal("12.5"), 1.235, "fractional digits"),
    ("integer", 2, Decimal("2.5"), "not a whole number"),
    ("bigint", 3, Decimal("2.5"), "not a whole number"),
    ("timestamp(3) with time zone", T.replace(microsecond=5000), T.replace(microsecond=5500), "fractional seconds"),
    ("timestamp(0) without time zone", dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 0, 1), "fractional"),
]
IDS = ["numeric-scale", "numeric-scale-text", "numeric-scale-float", "int-fraction", "bigint-fraction",
       "timestamptz3-fraction", "timestamp0-fraction"]  # fmt: skip


@POSTGRES
@pytest.mark.parametrize(("ctype", "good", "bad", "words"), CASES, ids=IDS)
async def test_a_value_postgres_would_round_dead_letters_its_event(
    dest: Dest, ctype: str, good: Any, bad: Any, words: str
) -> None:
    dest.exec(f'CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "v" {ctype})')
    sink = await dest.sink()
    batch = [
        ev("insert", 1, 1, after={"id": 1, "v": good}),
        ev("insert", 2, 2, after={"id": 2, "v": bad}),
        ev("insert", 3, 3, after={"id": 3, "v": good}),
    ]
    with pytest.raises(PermanentError) as info:
        await sink.write(batch)
    assert words in str(info.value).lower() and names_column(str(info.value)), str(info.value)
    letters = await dead_letter_writer(sink).deliver(batch)
    assert [(d.event.position, d.error_class) for d in letters] == [((2,), "permanent")]
    assert [r[0] for r in dest.rows()] == [1, 3]


@POSTGRES
async def test_unconstrained_numeric_and_plain_timestamps_take_any_scale(dest: Dest) -> None:
    dest.exec('CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "v" numeric, "t" timestamptz)')
    sink = await dest.sink()
    await sink.write([ev("insert", 1, 1, after={"id": 1, "v": Decimal("1.23456789"), "t": T.replace(microsecond=1)})])
    assert dest.rows() == [(1, Decimal("1.23456789"), T.replace(microsecond=1))]


@POSTGRES
async def test_an_update_postgres_would_round_dead_letters(dest: Dest) -> None:
    dest.exec('CREATE TABLE "items" ("id" INTEGER PRIMARY KEY, "v" numeric(10,2))')
    dest.exec('INSERT INTO "items" ("id", "v") VALUES (1, 1.00), (2, 1.00)')
    sink = await dest.sink()
    batch = [
        ev("update", 1, 1, after={"id": 1, "v": Decimal("1.239")}, changed=("v",)),
        ev("update", 2, 2, after={"id": 2, "v": Decimal("2.5")}, changed=("v",)),
    ]
    letters = await dead_letter_writer(sink).deliver(batch)
    assert [d.event.position for d in letters] == [(1,)]
    assert dest.rows() == [(1, Decimal("1.00")), (2, Decimal("2.50"))]  # row 1 kept its value, not a rounded one
