"""orjson against msgspec.json on the payloads tidesync handles, with the options its code uses.

For each payload and operation: µs per call for each library and the ratio msgspec/orjson
(below 1: msgspec is faster). Payloads:

- ``stripe``: a signed-size Stripe ``invoice.paid`` event (bench/webhook_shape.py's generator):
  parse (the webhook intake's hot path: ``tidesync.sources.webhook.provider.parse_json`` against
  the same with orjson's parse; and each bare parse), and write (the backfill journal body);
- ``envelope``: the webhook sink's envelope head (``{"id", "type", "timestamp"}``) and the whole
  body as a receiver parses it;
- ``row``: a row as the sinks meet it (Decimal, datetime, bytes, UUID, a 70-bit int, a nested
  JSON document): the Stripe sink's key text (``default=str`` against ``key_text``), reconcile's
  canonical JSON (``OPT_SORT_KEYS`` + ``default=`` against ``canonical._json``) and the SQLite
  source's trigger JSON read back.

orjson is no dependency of tidesync any more; this comparison needs it installed
(``.venv/bin/pip install -e '.[bench]'``).

    .venv/bin/python bench/json_libs.py [--rounds 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

try:
    import orjson
except ImportError:
    sys.exit("bench/json_libs.py compares against orjson: .venv/bin/pip install -e '.[bench]'")

sys.path.insert(0, str(Path(__file__).parent))
from webhook_shape import invoice_event

from tidesync.event import ChangeEvent, to_json
from tidesync.reconcile.canonical import _json as canonical_json
from tidesync.sinks.stripe.params import key_text
from tidesync.sinks.webhook.envelope import envelope
from tidesync.sources.webhook.provider import _DIGITS_AS_ZEROS, _LONG_RUN, parse_json

_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # the intake's scan for integers past 64 bits before


def orjson_intake_parse(body: bytes) -> Any:
    """The intake's parse with orjson in msgspec's place (same scan for integers past 64 bits)."""
    doc = orjson.loads(body)
    if _LONG_RUN not in body.translate(_DIGITS_AS_ZEROS):
        return doc
    raise AssertionError("the bench payloads have no long integers")


def orjson_canonical_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def timed(fn: Callable[[], Any], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


def best_of(a: Callable[[], Any], b: Callable[[], Any], rounds: int, repeats: int = 7) -> tuple[float, float]:
    """µs per call of each, interleaved and the best of ``repeats``: the machine is shared."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a, rounds))
        tb.append(timed(b, rounds))
    return min(ta), min(tb)


def main(rounds: int) -> None:
    stripe_body = orjson.dumps(invoice_event(0))
    stripe_doc = orjson.loads(stripe_body)
    committed = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    row = {
        "id": 1042,
        "amount": Decimal("1234.50"),
        "rate": 0.0725,
        "paid_at": committed,
        "avatar": b"\x89PNG\r\n\x1a\n" * 8,
        "account": uuid.UUID("6f1c1f5e-2b1c-4c39-9a51-7d1b1d1f2a10"),
        "external_id": 2**70 + 7,
        "name": "Ann Example",
        "tags": ["vip", "eu"],
        "doc": {"plan": "pro", "seats": 12, "limits": {"api": 1000, "burst": 1.5}},
    }
    event = ChangeEvent("public.orders", (1042,), "update", None, row, ("amount",), (987654, 3), 1714566615.123456)
    row64 = {k: v for k, v in row.items() if k != "external_id"}  # orjson refuses integers past 64 bits
    event64 = ChangeEvent("public.orders", (1042,), "update", None, row64, ("amount",), (987654, 3), 1714566615.1)
    env_head = {"id": "msg_" + "0" * 32, "type": "public.orders.update", "timestamp": "2024-05-01T12:30:15.123456Z"}
    env_body = envelope(event, "msg_" + "0" * 32)
    key = (Decimal("10.5"), committed, uuid.UUID(int=7), "eu")
    json_doc = {"b": [1, 2.5, Decimal("3.25")], "a": {"z": committed, "y": b"\x00\x01"}, "c": "text"}
    sqlite_after = orjson.dumps({k: v for k, v in row.items() if k not in ("avatar", "external_id")}, default=str)
    assert key_text(key) == orjson.dumps(list(key), default=str).decode()
    assert (
        canonical_json(json_doc)
        == orjson.dumps(json_doc, default=orjson_canonical_default, option=orjson.OPT_SORT_KEYS).decode()
    )
    msgspec_decoder, msgspec_encoder = msgspec.json.Decoder(), msgspec.json.Encoder()

    cases: list[tuple[str, str, Callable[[], Any], Callable[[], Any]]] = [
        ("stripe", f"parse {len(stripe_body):,} B (intake)", lambda: orjson_intake_parse(stripe_body),
         lambda: parse_json(stripe_body)),
        ("stripe", "parse, bare call", lambda: orjson.loads(stripe_body), lambda: msgspec_decoder.decode(stripe_body)),
        ("stripe", "write (journal body)", lambda: orjson.dumps(stripe_doc),
         lambda: msgspec_encoder.encode(stripe_doc)),
        ("envelope", "head write", lambda: orjson.dumps(env_head), lambda: msgspec_encoder.encode(env_head)),
        ("envelope", "event body (to_json)", lambda: orjson.dumps(row64, default=str),
         lambda: to_json(event64)),
        ("envelope", f"parse {len(env_body)} B", lambda: orjson.loads(env_body),
         lambda: msgspec_decoder.decode(env_body)),
        ("row", "key text (default=str)", lambda: orjson.dumps(list(key), default=str).decode(),
         lambda: key_text(key)),
        ("row", "canonical JSON (sorted)",
         lambda: orjson.dumps(json_doc, default=orjson_canonical_default, option=orjson.OPT_SORT_KEYS).decode(),
         lambda: canonical_json(json_doc)),
        ("row", "canonical JSON of text",
         lambda: orjson.dumps(orjson.loads(sqlite_after), option=orjson.OPT_SORT_KEYS).decode(),
         lambda: canonical_json(sqlite_after)),
        ("row", f"parse SQLite trigger JSON {len(sqlite_after)} B", lambda: orjson.loads(sqlite_after),
         lambda: msgspec_decoder.decode(sqlite_after)),
    ]  # fmt: skip
    print(f"{'payload':9} {'operation':34} {'orjson µs':>10} {'msgspec µs':>11} {'msgspec/orjson':>15}")
    for payload, op, with_orjson, with_msgspec in cases:
        a, b = best_of(with_orjson, with_msgspec, rounds)
        print(f"{payload:9} {op:34} {a:10.2f} {b:11.2f} {b / a:14.2f}x")
    print("(the envelope's event body: orjson with default=str against tidesync's own msgspec to_json, for scale)")
    before, now = best_of(
        lambda: _LONG_DIGITS.search(stripe_body), lambda: _LONG_RUN in stripe_body.translate(_DIGITS_AS_ZEROS), rounds
    )
    print(f"intake's scan for 19-digit runs in the Stripe event: regex {before:.2f} µs before, {now:.2f} µs now")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5_000)
    main(parser.parse_args().rounds)
