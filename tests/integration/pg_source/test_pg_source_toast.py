"""NULL versus an unchanged TOASTed value, with and without shadow rows and REPLICA IDENTITY FULL."""

from __future__ import annotations

from pgs_helpers import Harness, sql

BIG = "SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 200) g"  # 6.4 kB


def create(dsn: str, full: bool = False) -> str:
    sql(
        dsn,
        "CREATE TABLE t (id int PRIMARY KEY, big text, small int, note text)",
        # out of line and uncompressed: a value over ~2 kB is TOASTed whatever its content
        "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL",
        *(["ALTER TABLE t REPLICA IDENTITY FULL"] if full else []),
    )
    big = sql(dsn, BIG)[0][0]
    assert len(big) > 2048
    return str(big)


async def test_unchanged_toast_is_absent_and_null_is_none(harness: Harness) -> None:
    big = create(harness.dsn)
    await harness.open(["t"], snapshot="never")
    sql(
        harness.dsn,
        "INSERT INTO t VALUES (1, %s, 1, 'n')",
        params=(big,),
    )
    sql(harness.dsn, "UPDATE t SET small = 2, note = NULL WHERE id = 1")
    ev = await harness.read_n(2)
    assert ev[0].after == {"id": 1, "big": big, "small": 1, "note": "n"}
    upd = ev[1]
    assert upd.op == "update"
    assert "big" not in upd.after  # type: ignore[operator]  # unknown, not a placeholder
    assert upd.after == {"id": 1, "small": 2, "note": None}  # NULL is a value
    assert upd.changed == ("id", "small", "note")
    assert "big" not in upd.fields_to_write()


async def test_shadow_rows_fill_unchanged_toast_and_narrow_changed(harness: Harness) -> None:
    big = create(harness.dsn)
    sql(harness.dsn, "INSERT INTO t VALUES (1, %s, 1, 'n')", params=(big,))
    await harness.open(["t"], shadow=True)  # the snapshot row becomes the shadow
    snap = await harness.read_n(1)
    assert snap[0].op == "snapshot" and snap[0].after["big"] == big  # type: ignore[index]
    await harness.close()  # shadows are in the state store, not in memory
    sql(harness.dsn, "UPDATE t SET small = 2 WHERE id = 1", "UPDATE t SET id = 7 WHERE id = 1")
    await harness.open(["t"], shadow=True)
    ev = await harness.read_n(3)
    upd = ev[0]
    assert upd.after == {"id": 1, "big": big, "small": 2, "note": "n"}  # the real value, filled
    assert upd.changed == ("small",)  # only what differs from the last image
    assert [(e.op, e.key) for e in ev[1:]] == [("delete", (1,)), ("insert", (7,))]
    assert ev[2].after == {"id": 7, "big": big, "small": 2, "note": "n"}  # a moved key keeps its TOAST value
    rows = await harness.state.shadow_scan(harness.kv_key, "public.t")
    assert [(r.key, r.row["big"] == big) for r in rows] == [((7,), True)]


async def test_replica_identity_full_gives_before_images_and_fills_toast(harness: Harness) -> None:
    big = create(harness.dsn, full=True)
    sql(harness.dsn, "INSERT INTO t VALUES (1, %s, 1, 'n')", params=(big,))
    await harness.open(["t"], snapshot="never")
    sql(harness.dsn, "UPDATE t SET small = 3 WHERE id = 1", "DELETE FROM t WHERE id = 1")
    upd, dele = await harness.read_n(2)
    assert upd.before == {"id": 1, "big": big, "small": 1, "note": "n"}
    assert upd.after == {"id": 1, "big": big, "small": 3, "note": "n"}
    assert upd.changed == ("small",)
    assert dele.before == {"id": 1, "big": big, "small": 3, "note": "n"}
