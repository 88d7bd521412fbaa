"""Pure parts of reconciliation: canonical values, chunk digests, the rate limit, settling suspects."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from tidesync.errors import SourceTransientError
from tidesync.reconcile.canonical import NULL, canonical, combine, encoder, row_hash
from tidesync.reconcile.compare import Lineup, Suspect
from tidesync.reconcile.settle import settle
from tidesync.reconcile.side import RateLimit, Reader
from tidesync.reconcile.target import Side, TablePair
from tidesync.schema import Column, EntitySchema
from tidesync.sources.polling.dialect import TableMeta
from tidesync.testing import FakeClock
from tidesync.transform import compile_transforms

UTC = dt.UTC


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        ("decimal", Decimal("1.50"), Decimal("1.5")),
        ("decimal", Decimal("1.50"), "1.5000"),  # SQLite keeps decimals as text
        ("decimal", 0.1, Decimal("0.1")),
        ("decimal", Decimal("-0.00"), 0),
        ("float64", Decimal("2.5"), 2.5),
        ("float32", 0.1, 0.10000000149011612),  # what a Postgres real gives back
        ("int64", True, 1),
        ("bool", True, 1),
        ("bool", "t", 1),
        (
            "timestamptz",
            dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2024, 1, 1, 10),
        ),  # MariaDB keeps a timestamptz as naive UTC
        ("timestamptz", dt.datetime(2024, 1, 1, 10, tzinfo=UTC), "2024-01-01 10:00:00+00:00"),  # SQLite text
        ("timestamp", dt.datetime(2024, 1, 1, 10, 0, 0, 500), "2024-01-01T10:00:00.000500"),
        ("date", dt.date(2024, 2, 29), "2024-02-29"),
        ("time", dt.time(8, 30), dt.timedelta(hours=8, minutes=30)),  # MariaDB TIME comes back as timedelta
        ("interval", dt.timedelta(seconds=1, microseconds=5), 1_000_005),
        ("uuid", uuid.UUID(int=5), str(uuid.UUID(int=5)).upper()),
        ("uuid", uuid.UUID(int=5), uuid.UUID(int=5).bytes),
        ("json", {"b": 1, "a": [1, 2]}, '{"a": [1, 2], "b": 1}'),
        ("bytes", b"\x00\xff", memoryview(b"\x00\xff")),
        ("string", "x", "x"),
    ],
)
def test_equal_values_of_different_types_have_one_canonical_text(kind: str, a: Any, b: Any) -> None:
    assert canonical(kind, a) == canonical(kind, b)


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        ("decimal", Decimal("1.5"), Decimal("1.51")),
        ("string", "", None),
        ("string", "null", None),
        ("int64", 1, 2),
        (
            "timestamptz",
            dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
            dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        ("json", {"a": 1}, {"a": 2}),
        ("int64", "abc", 0),  # not a number: tagged, never equal to a number, never a crash
    ],
)
def test_different_values_stay_different(kind: str, a: Any, b: Any) -> None:
    assert canonical(kind, a) != canonical(kind, b)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4))
def test_decimal_text_round_trips(d: Decimal) -> None:
    text = canonical("decimal", d)
    assert Decimal(text) == d and canonical("decimal", text) == text


@given(st.lists(st.text(), min_size=1, max_size=4), st.lists(st.text(), min_size=1, max_size=4))
def test_row_hashes_do_not_collide_by_joining(a: list[str], b: list[str]) -> None:
    if a != b:
        assert row_hash(a) != row_hash(b)


def test_chunk_digest_ignores_order_but_not_content() -> None:
    hs = [row_hash([str(i)]) for i in range(100)]
    assert combine(hs) == combine(list(reversed(hs)))
    assert combine(hs) != combine(hs[:-1])
    assert encoder(["int64", "string"])([None, "x"]) == (NULL, "x")


async def test_rate_limit_spreads_reads_over_time() -> None:
    clock = FakeClock()
    limit = RateLimit(500, clock)
    for _ in range(10):
        await limit.spend(100)
    assert sum(clock.sleeps) == pytest.approx(2.0)
    free = RateLimit(None, clock)
    await free.spend(10**9)
    assert len(clock.sleeps) == 10


# --- settling suspects ------------------------------------------------------------------------------


class FakeReader:
    def __init__(self, key: str, rows: list[dict[str, Any]]) -> None:
        self.key = key
        self.rows = {r[key]: r for r in rows}
        self.asked: list[list[tuple[Any, ...]]] = []

    async def rows_by_key(self, keys: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        self.asked.append(keys)
        return [self.rows[k[0]] for k in keys if k[0] in self.rows]


def _pair(transforms: list[Any]) -> tuple[TablePair, Any]:
    meta = TableMeta(None, "t", ("id", "name", "qty"), ("id",), ())
    dmeta = TableMeta(None, "t", ("id", "title", "qty"), ("id",), ())
    schema = EntitySchema("t", (Column("id", "int64"), Column("name", "string"), Column("qty", "int64")), ("id",))
    pair = TablePair(
        entity="t",
        source=Side("sqlite://", "sqlite", meta, ("id",), meta.columns),
        dest=Side("sqlite://", "sqlite", dmeta, ("id",), ("id", "title", "qty")),
        kinds=("int64", "string", "int64"),
        key_kinds=("int64",),
        mode="python",
        schema=schema,
    )
    return pair, compile_transforms(transforms)


async def test_suspects_are_read_again_and_only_lasting_drift_is_reported_and_repaired() -> None:
    pair, transform = _pair([{"rename": {"name": "title"}}])
    lineup = Lineup(pair, transform)
    src = FakeReader(
        "id", [{"id": 1, "name": "a", "qty": 1}, {"id": 2, "name": "b", "qty": 2}, {"id": 3, "name": "c", "qty": 3}]
    )
    # id 1 caught up since the walk (settled); 2 differs in qty; 3 is missing; 4 is extra.
    dst = FakeReader(
        "id", [{"id": 1, "title": "a", "qty": 1}, {"id": 2, "title": "b", "qty": 20}, {"id": 4, "title": "d", "qty": 4}]
    )
    suspects = {lineup.key_text((k,)): Suspect((k,) if k < 4 else None, (k,) if k != 3 else None) for k in (1, 2, 3, 4)}
    written: list[Any] = []

    async def repair(events: list[Any]) -> int:
        written.extend(events)
        return 0

    out = await settle(lineup, src, dst, suspects, batch=2, max_listed=10, now=lambda: 5.0, repair=repair)  # type: ignore[arg-type]
    assert (out.settled, out.missing, out.extra, out.different, out.repaired) == (1, 1, 1, 1, 3)
    assert len(src.asked) == 2  # in groups of 2
    by_key = {e.key: e for e in written}
    assert by_key[(2,)].op == "update" and by_key[(2,)].changed == ("qty",) and by_key[(2,)].after["title"] == "b"
    assert by_key[(3,)].op == "snapshot" and by_key[(3,)].after == {"id": 3, "title": "c", "qty": 3}
    assert by_key[(4,)].op == "delete" and by_key[(4,)].position == ()
    assert all(e.position == () and e.committed_at == 5.0 for e in written)


async def test_a_read_is_asked_again_after_a_lost_connection_and_gives_up_in_time() -> None:
    meta = TableMeta(None, "t", ("id",), ("id",), ())
    clock = FakeClock()
    reader = Reader(Side("sqlite://", "sqlite", meta, ("id",), ("id",)), ("int",), rate=None, clock=clock)
    calls = 0

    def flaky(fail: int) -> int:
        nonlocal calls
        calls += 1
        if calls <= fail:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionResetError("connection reset by peer"))
        return calls

    try:
        assert await reader._run(flaky, 2) == 3 and clock.sleeps == [1.0, 2.0]
        calls, clock.sleeps[:] = 0, []
        with pytest.raises(SourceTransientError, match="reconcile t"):
            await reader._run(flaky, 99)
        assert calls == 4 and clock.sleeps == [1.0, 2.0, 4.0]
    finally:
        await reader.close()
