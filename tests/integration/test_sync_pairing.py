"""Initial pairing of two populated tables whose sides make their own keys: Postgres (A) <-> MariaDB (B).

Records are matched by email, else by phone (the fallback); ``tidesync sync
plan`` reports matches, records to create on each side, a match-key collision
and each differing field with how its rule settles it, without writing. The
start refuses to pair while the collision remains; once it is fixed, pairing
settles differences by the rules (``lww`` by each side's ``updated_at``,
``max``), creates the records each side lacks, and keeps the matches in the ID
map (a second plan finds everything tracked).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.integration.test_sync_support import Side, SyncHarness, pg_source, poll_source
from tidesync.testing import eventually

PG = """CREATE TABLE contacts (id serial PRIMARY KEY, email text, phone text, name text, score int,
  updated_at timestamptz NOT NULL DEFAULT now())"""
MARIADB = """CREATE TABLE people (pid int AUTO_INCREMENT PRIMARY KEY, mail varchar(40), tel varchar(20),
  full_name varchar(40), score int,
  updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"""


def canonical_a(a: Side) -> list[tuple[object, ...]]:
    return a.rows("email, phone, name, score", "contacts")


def canonical_b(b: Side) -> list[tuple[object, ...]]:
    return b.rows("mail, tel, full_name, score", "people")


async def test_pairing_matches_creates_and_settles_by_rule(
    pg_database: str, mariadb_database: str, tmp_path: Path
) -> None:
    a, b = Side("pg", pg_database), Side("mariadb", mariadb_database)
    a.sql(PG)
    b.sql(MARIADB)
    a.sql("""INSERT INTO contacts (email, phone, name, score, updated_at) VALUES
      ('alice@x', '111', 'Alice', 5, '2024-01-01Z'),
      ('bob@x', '222', 'Bob (A)', 1, '2024-06-01Z'),
      ('carol@x', '333', 'Carol', 2, '2024-01-01Z'),
      (NULL, '555', 'Eve (A)', 3, '2024-01-01Z'),
      ('dup@x', '666', 'Dup', 1, '2024-01-01Z')""")
    b.sql("""INSERT INTO people (pid, mail, tel, full_name, score, updated_at) VALUES
      (10, 'alice@x', '111', 'Alice', 7, '2023-01-01'),
      (11, 'bob@x', '222', 'Bob (B)', 1, '2024-03-01'),
      (12, 'dave@x', '444', 'Dave', 4, '2024-01-01'),
      (13, NULL, '555', 'Eve (B)', 3, '2024-09-01'),
      (14, 'dup@x', '777', 'Dup one', 1, '2024-01-01'),
      (15, 'dup@x', '888', 'Dup two', 1, '2024-01-01')""")
    h = SyncHarness(tmp_path, f"p{uuid.uuid4().hex[:8]}", "")
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "contacts", tmp_path / "wa")}, table: contacts, key: id, timestamp: updated_at}}
    b: {{source: {poll_source(b.dsn, "people")}, table: people, key: pid, timestamp: updated_at}}
    fields: {{email: mail, phone: tel, name: full_name, score: score}}
    match: {{by: email, fallback: phone}}
    rules: {{default: lww, skew: 0s, fields: {{score: max}}}}
"""
    h.write()
    try:
        code, out, err = await h.cli("sync", "plan", str(h.path), h.name, "--json")
        assert code == 1, (out, err)  # a collision would make the start fail
        plan = json.loads(out)
        assert plan["matched"] == 3
        assert plan["blocking_collisions"] == 1
        assert plan["collisions"] == [
            {"fields": ["email"], "value": ["dup@x"], "a_keys": [[5]], "b_keys": [[14], [15]]}
        ]
        assert sorted(map(tuple, plan["records_to_create_on_b"])) == [(3,), (5,)]
        assert sorted(map(tuple, plan["records_to_create_on_a"])) == [(12,), (14,), (15,)]
        differences = {
            (d["field"], tuple(d["a_key"])): (d["rule"], d["outcome"], d["value"]) for d in plan["differences"]
        }
        assert differences == {
            ("score", (1,)): ("max", "b wins", 7),
            ("name", (2,)): ("lww", "a wins", "Bob (A)"),
            ("name", (4,)): ("lww", "b wins", "Eve (B)"),
        }
        assert len(canonical_a(a)) == 5 and len(canonical_b(b)) == 6  # the plan wrote nothing

        await h.start_expecting_failure("shared by several records")  # the start refuses to create duplicates
        b.sql("DELETE FROM people WHERE pid = 15")

        await h.start()
        expected = sorted(
            [
                ("alice@x", "111", "Alice", 7),  # max
                ("bob@x", "222", "Bob (A)", 1),  # lww: A's row is newer
                ("carol@x", "333", "Carol", 2),  # created on B
                (None, "555", "Eve (B)", 3),  # matched by phone; lww: B's row is newer
                ("dup@x", "666", "Dup", 1),  # same update time on both: lww ties go to A
                ("dave@x", "444", "Dave", 4),  # created on A
            ],
            key=repr,
        )
        await eventually(
            lambda: canonical_a(a) == expected and canonical_b(b) == expected, timeout=30, message="paired tables"
        )
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
        await h.stop()
        code, out, err = await h.cli("sync", "plan", str(h.path), h.name, "--json")
        assert code == 0, err
        again = json.loads(out)
        assert (again["matched"], again["create_on_a"], again["create_on_b"], again["already_tracked"]) == (0, 0, 0, 6)
    finally:
        await h.close()
