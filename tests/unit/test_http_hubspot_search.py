"""HubSpot search windows (pure): every record read, the ceiling never passed, ties paged by id, always ending."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tidesync.sources.http.hubspot_search import Pass, cursor_ms
from tidesync.testing.hubspot import FakeHubSpot, search

BASE = 1_700_000_000_000
CURSOR = "hs_lastmodifieddate"


def drain(fake: FakeHubSpot, run: Pass, ceiling: int, on_page: object = None, max_requests: int = 5000) -> list[str]:
    ids: list[str] = []
    requests = 0
    while not run.done:
        requests += 1
        assert requests <= max_requests, "the pass does not end"
        body = run.request(None)
        assert int(body.get("after", 0)) < ceiling
        status, answer = search(fake.records.get("deals", {}), body, ceiling)
        assert status == 200, answer
        results = run.advance(answer)
        ids += [r["id"] for r in results or ()]
        if callable(on_page):
            on_page(requests)
    return ids


@settings(max_examples=60, deadline=None)
@given(
    stamps=st.lists(st.one_of(st.integers(0, 2_000), st.sampled_from([777, 1_500])), min_size=0, max_size=700),
    ceiling=st.sampled_from([100, 150, 300]),
    limit=st.sampled_from([7, 50, 100]),
)
def test_every_record_in_the_range_is_read_and_the_ceiling_is_never_passed(
    stamps: list[int], ceiling: int, limit: int
) -> None:
    fake = FakeHubSpot()
    for i, t in enumerate(stamps, 1):
        fake.upsert("deals", i, BASE + t)
    run = Pass(CURSOR, BASE - 1, BASE + 2_000, limit=limit, ceiling=ceiling)
    ids = drain(fake, run, ceiling)
    assert sorted(set(ids), key=int) == [str(i) for i in range(1, len(stamps) + 1)]
    assert len(ids) == len(set(ids))  # with nothing changing meanwhile, nothing is read twice


def test_more_records_in_one_millisecond_than_the_ceiling_are_read_by_id() -> None:
    fake = FakeHubSpot()
    for i in range(1, 1001):
        fake.upsert("deals", i, BASE + 10)
    run = Pass(CURSOR, 0, BASE + 100, limit=100, ceiling=300)
    ids = drain(fake, run, 300)
    assert sorted(ids, key=int) == [str(i) for i in range(1, 1001)]
    assert run.tie is None and run.done


def test_records_changing_while_a_window_is_read_are_not_skipped() -> None:
    """A record modified mid-window leaves it (its time moves past the end); offsets shift under the reader."""
    fake = FakeHubSpot()
    rng = random.Random(3)
    for i in range(1, 401):
        fake.upsert("deals", i, BASE + rng.randrange(1000))
    run = Pass(CURSOR, BASE - 1, BASE + 1000, limit=50, ceiling=10_000)
    moved: set[str] = set()

    def modify(n: int) -> None:
        if n % 2 == 0:  # after every other page, two records not read yet move out of the window
            for rid in rng.sample(sorted(fake.records["deals"]), 2):
                fake.upsert("deals", int(rid), BASE + 5000)
                moved.add(rid)

    ids = drain(fake, run, 10_000, on_page=modify)
    in_range = {rid for rid, r in fake.records["deals"].items()
                if cursor_ms(r["properties"][CURSOR]) <= BASE + 1000}  # fmt: skip
    assert in_range <= set(ids)  # everything still in the window was read (some twice: the caller's shadow dedupes)
    assert moved  # and the window did shift under the reader


def test_a_pass_resumes_from_its_marks() -> None:
    fake = FakeHubSpot()
    for i in range(1, 501):
        fake.upsert("deals", i, BASE + (i % 3))  # heavy ties
    run = Pass(CURSOR, BASE - 1, BASE + 10, limit=50, ceiling=150)
    ids: list[str] = []
    for _ in range(4):
        _, answer = search(fake.records["deals"], run.request(None), 150)
        ids += [r["id"] for r in run.advance(answer) or ()]
    resumed = Pass.restore(CURSOR, run.marks(), 50, 150)
    ids += drain(fake, resumed, 150)
    assert sorted(set(ids), key=int) == [str(i) for i in range(1, 501)] and len(ids) == 500
