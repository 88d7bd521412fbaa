"""The Postgres source's row shadows (sources/postgres/fields.py): exact ``changed``, across restarts and replays.

A "crash" here is a keeper dropped without closing, and a new one opened on
the same store with the position the engine had committed: what a process
killed with SIGKILL leaves.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from tidesync.event import DELETE, INSERT, SNAPSHOT, TRUNCATE, UPDATE, ChangeEvent, Position
from tidesync.sources.postgres.fields import FieldShadow

T = "public.t"
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def ev(op: str, key: int, pos: Position, **row: object) -> ChangeEvent:
    after = {"id": key, **row} if op != DELETE else None
    before = {"id": key} if op == DELETE else None
    return ChangeEvent(T, (key,), op, before, after, None, pos, 0.0)


async def keeper(path: Path, after: Position | None, mode: str = "fingerprint") -> FieldShadow:
    k = FieldShadow(path / "shadow", "slot_a", mode, lambda entity: ("id", "a", "b", "big"))  # type: ignore[arg-type]
    await k.open(after)
    return k


def crash(k: FieldShadow) -> None:
    """What SIGKILL leaves: committed store transactions, no flush, no cleanup (LMDB allows one open per
    process, so the environment handle itself is released)."""
    k.store._env.close()


async def changed(k: FieldShadow, *events: ChangeEvent) -> list[tuple[str, ...] | None]:
    out = await k.apply(list(events), events[-1].position)
    return [e.changed for e in out]


async def test_updates_list_only_what_changed_in_memory_and_after_a_restart(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None)
    got = await changed(
        k,
        ev(INSERT, 1, (10, 0), a=1, b="x", big="y" * 500, d=NOW, n=Decimal("1.50")),
        ev(UPDATE, 1, (11, 0), a=2, b="x", big="y" * 500, d=NOW, n=Decimal("1.50")),
    )
    assert got == [None, ("a",)]
    await k.confirmed((11, 0))
    await k.close()
    k = await keeper(tmp_path, (11, 0))
    got = await changed(
        k,
        ev(UPDATE, 1, (12, 0), a=2, b="x", big="y" * 500, d=NOW, n=Decimal("1.50")),  # nothing changed
        ev(UPDATE, 1, (13, 0), a=2, b="x", big="y" * 499 + "z", d=NOW, n=Decimal("1.50")),  # a long value (digest)
        ev(UPDATE, 1, (14, 0), a=2, b="x", big="y" * 499 + "z", d=NOW + dt.timedelta(microseconds=1), n=Decimal("1.5")),
    )
    assert got == [(), ("big",), ("d",)]  # 1.50 and 1.5 are the same number
    await k.close()


async def test_a_replay_after_a_crash_is_exact_even_though_the_store_ran_ahead(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None)
    await changed(k, ev(INSERT, 1, (10, 0), a=0, b=0), ev(INSERT, 2, (10, 1), a=0, b=0))
    await k.confirmed((10, 1))
    # produced (and stored) but never committed by the engine: the store is ahead of the checkpoint
    assert await changed(
        k, ev(UPDATE, 1, (11, 0), a=1, b=0), ev(UPDATE, 1, (12, 0), a=1, b=1), ev(DELETE, 2, (12, 1))
    ) == [("a",), ("b",), None]
    # SIGKILL: the engine resumes after its checkpoint (10, 1) and the same events come again
    crash(k)
    k = await keeper(tmp_path, (10, 1))
    assert await changed(k, ev(UPDATE, 1, (11, 0), a=1, b=0)) == [("a",)]  # not a no-op
    await k.confirmed((11, 0))
    assert await changed(k, ev(UPDATE, 1, (12, 0), a=1, b=1), ev(DELETE, 2, (12, 1))) == [("b",), None]
    assert await changed(k, ev(UPDATE, 1, (13, 0), a=5, b=1)) == [("a",)]
    # a second crash in the middle of a replayed batch, resuming after (11, 0)
    crash(k)
    k = await keeper(tmp_path, (11, 0))
    assert await changed(k, ev(UPDATE, 1, (12, 0), a=1, b=1), ev(UPDATE, 1, (13, 0), a=5, b=1)) == [("b",), ("a",)]
    await k.close()


async def test_versions_before_the_confirmed_position_are_dropped(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None)
    for i in range(1, 6):
        await changed(k, ev(UPDATE if i > 1 else INSERT, 1, (i, 0), a=i))
        await k.confirmed((i, 0))
    assert [p for p, _, _ in k._mem[(T, (1,))]] == [(4, 0), (5, 0)]  # trimmed when written: (4, 0) was confirmed
    await changed(k, ev(UPDATE, 1, (6, 0), a=6), ev(UPDATE, 1, (7, 0), a=7))
    assert [p for p, _, _ in k._mem[(T, (1,))]] == [(5, 0), (6, 0), (7, 0)]  # a replay from (5, 0) needs them
    await k.close()


async def test_never_seen_rows_and_truncate_give_whole_rows(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None)
    assert await changed(k, ev(UPDATE, 9, (1, 0), a=1, b=2)) == [None]  # no shadow: every column
    assert await changed(k, ev(UPDATE, 9, (2, 0), a=1, b=3)) == [("b",)]
    await changed(k, ChangeEvent(T, (), TRUNCATE, None, None, None, (3, 0), 0.0))
    assert await changed(k, ev(UPDATE, 9, (4, 0), a=1, b=3)) == [None]
    await k.close()
    k = await keeper(tmp_path, (4, 0))
    assert await changed(k, ev(UPDATE, 9, (5, 0), a=1, b=3)) == [()]
    await k.close()


async def test_snapshot_rows_are_shadows_and_wide_integer_keys_work(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None)
    big = 10**30
    snap = ChangeEvent(T, (big,), SNAPSHOT, None, {"id": big, "a": 10**25, "b": 1}, None, (0, 0, 0, 1, 0), 0.0)
    await changed(k, snap)
    await k.confirmed((0, 0, 0, 1, 0))
    await k.close()
    k = await keeper(tmp_path, (0, 0, 0, 1, 0))
    upd = ChangeEvent(T, (big,), UPDATE, None, {"id": big, "a": 10**25, "b": 2}, None, (5, 0), 0.0)
    assert await changed(k, upd) == [("b",)]
    await k.close()


async def test_a_store_behind_the_checkpoint_starts_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k = await keeper(tmp_path, None)
    await changed(k, ev(INSERT, 1, (10, 0), a=0))
    await k.close()
    k = await keeper(tmp_path, (20, 0))  # the engine committed past what the store holds (a machine crash)
    assert "starting them over" in caplog.text
    assert await changed(k, ev(UPDATE, 1, (21, 0), a=0)) == [None]  # unknown again: whole row, never a no-op
    await k.close()


async def test_rows_mode_fills_unchanged_toast(tmp_path: Path) -> None:
    k = await keeper(tmp_path, None, "rows")
    await changed(k, ev(INSERT, 1, (1, 0), a=1, b=NOW, big="v" * 5000))
    await k.close()
    k = await keeper(tmp_path, (1, 0), "rows")
    (upd,) = await k.apply([ev(UPDATE, 1, (2, 0), a=2, b=NOW)], (2, 0))  # big: unchanged TOAST, not sent
    assert upd.after == {"id": 1, "a": 2, "b": NOW, "big": "v" * 5000} and upd.changed == ("a",)
    await k.close()


async def test_batches_without_events_move_the_store_along(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    k = await keeper(tmp_path, None)
    await changed(k, ev(INSERT, 1, (10, 0), a=0, b=0))
    await k.advance((30, -1))  # heartbeats and other tables' changes: the engine may commit (30, -1)
    crash(k)
    k = await keeper(tmp_path, (30, -1))
    assert "starting them over" not in caplog.text
    assert await changed(k, ev(UPDATE, 1, (31, 0), a=1, b=0)) == [("a",)]
    await k.close()
