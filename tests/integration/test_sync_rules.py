"""Two-way sync end to end, one conflict per rule: Postgres <-> Postgres (CDC both sides) and Postgres <-> MariaDB
(CDC on A, SQL polling on B), with ``manual`` resolved through the CLI.

One table holds a field per rule. The sync runs, stops; both sides edit every
field of one record (B after A, so B's commit is the later one); the sync
starts again and settles each field by its rule. The parked ``manual`` field
is resolved with ``tidesync conflicts resolve --take b``. Then the sync must
go quiet: no more writes, no row touched (no echo, no ping-pong).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_sync_support import (
    Side,
    SyncHarness,
    pg_source,
    poll_source,
    versions,
)
from tidesync.testing import eventually

COLUMNS = "id, lww, pref, nn, mx, mn, cnt, tags, man, note"

PG_TABLE = """CREATE TABLE items (
  id int PRIMARY KEY, lww text, pref text, nn text, mx int, mn int, cnt int, tags text[], man text, note text,
  updated_at timestamptz NOT NULL DEFAULT now())"""
MARIADB_TABLE = """CREATE TABLE items (
  id int PRIMARY KEY, lww varchar(40), pref varchar(40), nn varchar(40), mx int, mn int, cnt int, tags json,
  man varchar(40), note varchar(40),
  updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"""


def config(h: SyncHarness, a: Side, b: Side, tmp: Path) -> str:
    b_source = pg_source(b.dsn, "items", tmp / "wb") if b.kind == "pg" else poll_source(b.dsn, "items")
    transforms = ""
    if b.kind == "mariadb":  # a Postgres text[] is a JSON text on MariaDB
        transforms = "    transforms: {b_to_a: [{cast: {tags: json}}], a_to_b: [{cast: {tags: string}}]}\n"
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp / "wa")}, table: items, key: id}}
    b: {{source: {b_source}, table: items, key: id}}
    fields: {{id: id, lww: lww, pref: pref, nn: nn, mx: mx, mn: mn, cnt: cnt, tags: tags, man: man, note: note}}
    rules:
      default: lww
      skew: 0s
      fields: {{pref: {{prefer: a}}, nn: non_null, mx: max, mn: min, cnt: sum, tags: union, man: manual}}
{transforms}"""


def tags_of(side: Side, value: Any) -> Any:
    return value if side.kind == "pg" else __import__("json").loads(value)


def normal(side: Side, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*r[:7], tags_of(side, r[7]), *r[8:]) for r in rows]


@pytest.mark.parametrize("b_kind", ["pg", "mariadb"])
async def test_each_rule_settles_its_conflict(
    b_kind: str, pg_database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    a = Side("pg", pg_database)
    b_dsn = request.getfixturevalue("pg_database_b" if b_kind == "pg" else "mariadb_database")
    b = Side(b_kind, b_dsn)
    a.sql(PG_TABLE)
    b.sql(PG_TABLE if b_kind == "pg" else MARIADB_TABLE)
    a.sql(
        "INSERT INTO items VALUES (1, 'l0', 'p0', 'n0', 1, 1, 10, '{x,y}', 'm0', NULL), "
        "(2, 'l0', 'p0', 'n0', 1, 1, 10, '{x,y}', 'm0', NULL)"
    )
    h = SyncHarness(tmp_path, f"r{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h, a, b, tmp_path)
    try:
        await h.start()  # pairing creates both records on B
        await eventually(lambda: normal(b, b.rows(COLUMNS)) == a.rows(COLUMNS), timeout=30, message="pairing")
        await h.stop()

        # both sides edit every field of record 1 while the sync is down; B commits last
        a.sql(
            "UPDATE items SET lww = 'la', pref = 'pa', nn = NULL, mx = 5, mn = 5, cnt = 13, "
            "tags = '{x,y,a}', man = 'ma' WHERE id = 1"
        )
        a.sql("UPDATE items SET note = 'only A' WHERE id = 2")
        tags_b = "'{y}'" if b_kind == "pg" else "'[\"y\"]'"
        b.sql(
            f"UPDATE items SET lww = 'lb', pref = 'pb', nn = 'nb', mx = 9, mn = 9, cnt = 15, tags = {tags_b}, "
            "man = 'mb' WHERE id = 1"
        )

        await h.start()
        expected = [
            # id, lww (later wins), pref (A), nn (the value), max, min, sum (10 + 3 + 5), union, man: parked
            (1, "lb", "pa", "nb", 9, 5, 18, ["y", "a"]),
            (2, "l0", "p0", "n0", 1, 1, 10, ["x", "y"]),
        ]
        first = "id, lww, pref, nn, mx, mn, cnt, tags"
        await eventually(
            lambda: (
                a.rows(first) == expected
                and normal(b, [(*r, None, None) for r in b.rows(first)]) == [(*e, None, None) for e in expected]
                and b.rows("id, note") == [(1, None), (2, "only A")]
            ),
            timeout=30,
            message="every rule applied on both sides",
        )
        assert a.rows("id, man") == [(1, "ma"), (2, "m0")] and b.rows("id, man") == [(1, "mb"), (2, "m0")]

        conflicts = await h.cli_json("conflicts", "list", str(h.path), "--sync", h.name)
        assert [(c["field"], c["a"]["value"], c["b"]["value"], c["shadow"]["value"]) for c in conflicts] == [
            ("man", "ma", "mb", "m0")
        ]
        code, _, err = await h.cli(
            "conflicts", "resolve", str(h.path), conflicts[0]["id"], "--take", "b", "--by", "ada"
        )
        assert code == 0, err
        await eventually(lambda: a.rows("id, man") == [(1, "mb"), (2, "m0")], timeout=30, message="resolution")
        assert b.rows("id, man") == [(1, "mb"), (2, "m0")]
        assert await h.cli_json("conflicts", "list", str(h.path)) == []

        history = await h.cli_json("sync", "history", str(h.path), h.name)
        settled = {e["field"]: (e["rule"], e["winner"], e["by"]) for e in history if e["winner"]}
        assert settled == {
            "lww": ("lww", "b", "rule"),
            "pref": ("prefer:a", "a", "rule"),
            "nn": ("non_null", "b", "rule"),
            "mx": ("max", "b", "rule"),
            "mn": ("min", "a", "rule"),
            "cnt": ("sum", "merge", "rule"),
            "tags": ("union", "merge", "rule"),
            "man": ("manual", "b", "ada"),
        }

        # no echo, no ping-pong: once settled, nothing is written and no row changes
        await h.quiet()
        writes = dict(h.runner.processor.stats.writes)  # type: ignore[union-attr]
        before = (versions(a), versions(b))
        await h.quiet(cycles=h.runner.idle_cycles + 4)
        assert h.runner.processor.stats.writes == writes  # type: ignore[union-attr]
        assert (versions(a), versions(b)) == before
    finally:
        await h.close()
