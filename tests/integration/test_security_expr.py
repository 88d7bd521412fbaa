"""Expressions under attack, over HTTP against a real ``tidesync serve``: a record's numbers cannot buy memory or time.

A generic HMAC webhook source feeds a pipeline whose ``compute:`` step has
``qty % 7``, ``note * qty``, ``round(x, n)`` and ``replace(s, '', s)`` into
SQLite. Small, correctly signed bodies that would make those 800 MB (``%``
formatting), 200 MB (string repetition), a 5-second stall (``round`` with
``n = -10**8``) or 400 MB (``replace``) are valid deliveries: each is answered
2xx and its event lands in the dead-letter queue, with a reason naming the
bound, while the server's RSS stays within 50 MiB of its start and a good
event sent right after is written within a couple of seconds.

A second pipeline adds and subtracts: a record whose ``+`` or ``-`` meets a
bool (JSON ``true``/``false``; Python would make ``True + 1`` 2) or whose
``s + s`` would pass the 1 MiB value cap is dead-lettered the same way, and
the numbers and strings around them are computed as before.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from tests.integration.security_support import Served, served
from tidesync.sources.webhook.signatures import sign_hmac
from tidesync.testing import wait_until
from tidesync.transform.limits import MAX_VALUE_SIZE

MiB = 1024 * 1024
RSS_SLACK = 50 * MiB

CONFIG = """\
state: sqlite:///{tmp}/state.db
api:
  listen: 127.0.0.1:0
  token: ${{file:{tmp}/token.txt}}
pipelines:
  - name: orders
    source:
      type: webhook
      provider: generic
      name: hmac
      secrets: ["{hmac}"]
      signature: {{scheme: hmac-sha256, header: X-Signature, prefix: "sha256="}}
      mapping: {{event_id: id, entity: orders, key: [id], default_op: insert}}
    transforms:
      - compute:
          mod: "qty % 7"
          pad: "note * qty"
          r: "round(x, n)"
          rep: "replace(s, '', s)"
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
"""

ATTACKS: dict[int, tuple[dict[str, Any], str]] = {
    # id: (body, what the dead letter's error says)
    1: ({"qty": "%0800000000d"}, "compute mod: '%' takes numbers, got '%0800000000d' and 7"),
    2: ({"note": "xx", "qty": 100_000_000}, "compute pad: '*' takes numbers, got 'xx' and 100000000"),
    3: ({"x": 7, "n": -100_000_000}, "compute r: round() digits must be between -50 and 50, got -100000000"),
    4: ({"s": "ab" * 10_000}, "compute rep: replace() would make a value of 400,040,000 characters"),
}


def post(server: Served, record: dict[str, Any]) -> int:
    body = msgspec.json.encode(record)
    headers = {
        "content-type": "application/json",
        "x-signature": sign_hmac(body, server.secrets["hmac"], prefix="sha256="),
    }
    with server.client() as client:
        return client.post("/webhooks/hmac", content=body, headers=headers).status_code


def written(tmp: Path, key: int) -> dict[str, Any] | None:
    """The row the sink wrote for ``key``, None while there is none."""
    path = tmp / "dst.db"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM orders WHERE id = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # the table is not there yet
            return None
    return dict(row) if row is not None else None


@contextlib.contextmanager
def peak_rss(server: Served) -> Iterator[list[int]]:
    """Sample the server's RSS every 10 ms while the block runs; yields [peak] (filled at exit)."""
    peak = [server.rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            with contextlib.suppress(Exception):
                peak[0] = max(peak[0], server.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], server.rss())


def test_amplifying_expressions_dead_letter_the_record_and_the_server_keeps_going(tmp_path: Path) -> None:
    with served(tmp_path, CONFIG) as server:
        # A good event first: the pipeline, the sink's table and its connection are warm before RSS is taken.
        assert post(server, {"id": 100, "qty": 10, "note": 3, "x": 2.567, "n": 2, "s": "ab"}) == 200
        first = wait_until(lambda: written(tmp_path, 100), timeout=30, message="the warm-up event written")
        assert (first["mod"], first["pad"], first["r"], first["rep"]) == (3, 30, 2.57, "abaabbab")
        start = server.rss()

        with peak_rss(server) as peak:
            for key, (record, _) in ATTACKS.items():
                assert post(server, {"id": key, **record}) == 200
            assert post(server, {"id": 101, "qty": 9, "note": 2, "x": 1.25, "n": 1, "s": "x"}) == 200
            # Events are read in order: the one after the attacks is written promptly, so none stalled the loop.
            after = wait_until(lambda: written(tmp_path, 101), timeout=3, message="the event after the attacks")
        assert (after["mod"], after["pad"], after["r"], after["rep"]) == (2, 18, 1.2, "xxx")
        assert peak[0] - start < RSS_SLACK, f"RSS grew by {(peak[0] - start) / MiB:.0f} MiB"

        with server.client() as client:
            answer = client.get("/api/dlq", params={"pipeline": "orders"}, headers=server.auth)
        assert answer.status_code == 200
        letters = {tuple(e["key"]): e for e in answer.json()}
        assert set(letters) == {(key,) for key in ATTACKS}
        for key, (_, reason) in ATTACKS.items():
            assert letters[(key,)]["error_class"] == "transform"
            assert letters[(key,)]["error"].startswith(reason), letters[(key,)]["error"]
        assert all(written(tmp_path, key) is None for key in ATTACKS)
        with server.client() as client:
            assert client.get("/healthz").status_code == 200


PLUS_MINUS = (
    CONFIG.split("    transforms:")[0]
    + """\
    transforms:
      - compute:
          total: "a + b"
          less: "c - d"
          dec: "e - 1"
          twice: "s + s"
    sink: {{type: sqlite, path: {tmp}/dst.db, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 5}}
"""
)

HALF = MAX_VALUE_SIZE // 2 + 1  # twice this is one character over the cap; the body stays under 1 MiB
REFUSED: dict[int, tuple[dict[str, Any], str]] = {
    # id: (body, what the dead letter's error says)
    1: ({"a": True, "b": 1}, "compute total: '+' takes numbers, not bool: got True and 1"),
    2: ({"a": 2, "b": False}, "compute total: '+' takes numbers, not bool: got 2 and False"),
    3: ({"c": True, "d": True}, "compute less: '-' takes numbers, not bool: got True and True"),
    4: ({"e": False}, "compute dec: '-' takes numbers, not bool: got False and 1"),
    5: ({"s": "x" * HALF}, f"compute twice: '+' would make a value of {2 * HALF:,} characters"),
}


def test_plus_and_minus_refuse_bools_and_oversized_strings_per_record(tmp_path: Path) -> None:
    with served(tmp_path, PLUS_MINUS) as server:
        for key, (record, _) in REFUSED.items():
            assert post(server, {"id": key, **record}) == 200
        good = {"id": 100, "a": 2, "b": 3, "c": 7.5, "d": 2, "e": 10, "s": "x" * (MAX_VALUE_SIZE // 2)}
        assert post(server, good) == 200
        row = wait_until(lambda: written(tmp_path, 100), timeout=30, message="the good event written")
        assert (row["total"], row["less"], row["dec"], len(row["twice"])) == (5, 5.5, 9, MAX_VALUE_SIZE)

        with server.client() as client:
            answer = client.get("/api/dlq", params={"pipeline": "orders"}, headers=server.auth)
        assert answer.status_code == 200
        letters = {tuple(e["key"]): e for e in answer.json()}
        assert set(letters) == {(key,) for key in REFUSED}
        for key, (_, reason) in REFUSED.items():
            assert letters[(key,)]["error_class"] == "transform"
            assert letters[(key,)]["error"].startswith(reason), letters[(key,)]["error"]
        assert all(written(tmp_path, key) is None for key in REFUSED)
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
