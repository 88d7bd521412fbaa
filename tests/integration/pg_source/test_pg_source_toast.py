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
    await harness.open(["t"], snapshot="never", shadow="off")  # whole-row updates
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


async def test_default_lists_only_changed_columns(harness: Harness) -> None:
    big = create(harness.dsn)
    await harness.open(["t"], snapshot="never")  # the default: shadow fingerprint
    sql(harness.dsn, "INSERT INTO t VALUES (1, %s, 1, 'n')", params=(big,))
    sql(harness.dsn, "UPDATE t SET small = 2, note = NULL WHERE id = 1", "UPDATE t SET small = 2 WHERE id = 1")
    ev = await harness.read_n(3)
    assert ev[1].after == {"id": 1, "small": 2, "note": None}  # unchanged TOAST stays unknown (not filled)
    assert ev[1].changed == ("small", "note")
    assert ev[1].fields_to_write() == ("small", "note")
    assert ev[2].changed == ()  # set to the value it had: nothing to write
    await harness.close()
    sql(harness.dsn, "UPDATE t SET big = 'short' WHERE id = 1", "UPDATE t SET note = 'x', big = 'short' WHERE id = 1")
    await harness.open(["t"], snapshot="never")  # after a restart, from the values on disk
    ev = await harness.read_n(2)
    assert ev[0].changed == ("big",)  # the long value was kept as a digest: a change of it is seen
    assert ev[1].changed == ("note",)


async def test_shadow_rows_fill_unchanged_toast_and_narrow_changed(harness: Harness) -> None:
    big = create(harness.dsn)
    sql(harness.dsn, "INSERT INTO t VALUES (1, %s, 1, 'n')", params=(big,))
    await harness.open(["t"], shadow="rows")  # the snapshot row becomes the shadow
    snap = await harness.read_n(1)
    assert snap[0].op == "snapshot" and snap[0].after["big"] == big  # type: ignore[index]
    await harness.close()  # shadows are on disk, not only in memory
    sql(harness.dsn, "UPDATE t SET small = 2 WHERE id = 1", "UPDATE t SET id = 7 WHERE id = 1")
    await harness.open(["t"], shadow="rows")
    ev = await harness.read_n(3)
    upd = ev[0]
    assert upd.after == {"id": 1, "big": big, "small": 2, "note": "n"}  # the real value, filled
    assert upd.changed == ("small",)  # only what differs from the last image
    assert [(e.op, e.key) for e in ev[1:]] == [("delete", (1,)), ("insert", (7,))]
    assert ev[2].after == {"id": 7, "big": big, "small": 2, "note": "n"}  # a moved key keeps its TOAST value
    await harness.close()
    sql(harness.dsn, "UPDATE t SET small = 3 WHERE id = 7")
    await harness.open(["t"], shadow="rows")
    (upd,) = await harness.read_n(1)
    assert upd.after == {"id": 7, "big": big, "small": 3, "note": "n"} and upd.changed == ("small",)


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
