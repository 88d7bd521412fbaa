"""Cost of the transform chain per event, beside a plain dict comprehension doing the same rename.

    .venv/bin/python bench/transforms.py                 # 1,000,000 events, the default chain
    .venv/bin/python bench/transforms.py --all --events 200000

Events are generated lazily, 1,000 per batch, as 6-field insert rows (or
updates with a before image and ``changed``, ``--updates``); only
``Transform.apply`` (and, for the reference, the comprehension) is timed.
The default chain is the engine benchmark's: rename one field, cast one field
(``rename: {email: email_address}``, ``cast: {phone: string}``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from tidesync.event import ChangeEvent
from tidesync.transform import compile_transforms

CHAINS: dict[str, list[dict[str, Any]]] = {
    "rename+cast(string)": [{"rename": {"email": "email_address"}}, {"cast": {"phone": "string"}}],
    "rename+cast(int)": [{"rename": {"email": "email_address"}}, {"cast": {"age": "int"}}],
    "rename+cast(decimal)": [{"rename": {"email": "email_address"}}, {"cast": {"score": "decimal"}}],
    "rename+cast+filter+compute": [
        {"rename": {"email": "email_address"}},
        {"cast": {"phone": "string"}},
        {"filter": "age != '13'"},
        {"compute": {"name_lc": "lower(name)"}},
    ],
}


def batches(total: int, size: int, updates: bool) -> Iterator[list[ChangeEvent]]:
    for start in range(0, total, size):
        batch = []
        for i in range(start, min(start + size, total)):
            after = {
                "id": i,
                "email": f"user{i}@example.com",
                "phone": "+49 030 1234",
                "name": "Ada Lovelace",
                "score": "12.5",
                "age": str(20 + i % 50),
            }
            if updates:
                before = dict(after, score="11.5")
                batch.append(ChangeEvent("public.customers", (i,), "update", before, after, ("score",), (i,)))
            else:
                batch.append(ChangeEvent("public.customers", (i,), "insert", None, after, None, (i,)))
        yield batch


def measure_chain(steps: list[dict[str, Any]], total: int, size: int, updates: bool) -> float:
    transform = compile_transforms(steps)
    spent = 0
    done = 0
    for batch in batches(total, size, updates):
        t0 = time.perf_counter_ns()
        _, failures = transform.apply(batch)
        spent += time.perf_counter_ns() - t0
        assert not failures, failures[:1]
        done += len(batch)
    return spent / done / 1000


def measure_reference(total: int, size: int, updates: bool) -> float:
    get = {"email": "email_address"}.get
    spent = 0
    done = 0
    for batch in batches(total, size, updates):
        t0 = time.perf_counter_ns()
        out = [{get(k, k): v for k, v in e.after.items()} for e in batch]  # type: ignore[union-attr]
        spent += time.perf_counter_ns() - t0
        assert len(out) == len(batch)
        done += len(batch)
    return spent / done / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--updates", action="store_true", help="update events with before image and changed")
    parser.add_argument("--all", action="store_true", help="every chain, not only rename+cast(string)")
    args = parser.parse_args()

    kind = "updates" if args.updates else "inserts"
    print(f"{args.events:,} {kind}, 6-field rows, batches of {args.batch:,}")
    reference = measure_reference(args.events, args.batch, args.updates)
    print(f"  {'reference: dict comprehension rename':<40} {reference:6.3f} us/event")
    names = list(CHAINS) if args.all else ["rename+cast(string)"]
    for name in names:
        cost = measure_chain(CHAINS[name], args.events, args.batch, args.updates)
        print(f"  {name:<40} {cost:6.3f} us/event  ({cost / reference:4.2f}x reference, {1e6 / cost:,.0f} events/s)")


if __name__ == "__main__":
    main()
