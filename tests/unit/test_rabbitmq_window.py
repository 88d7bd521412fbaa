"""The RabbitMQ source's de-duplication window and the sink's routing keys: pure logic, no broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.routing import render
from tidesync.sources.rabbitmq.window import Window, chunk_key, chunk_position


def test_chunk_keys_sort_as_positions_and_parse_back() -> None:
    keys = [chunk_key("p/s/", n) for n in (9, 10, 100, 2)]
    assert sorted(keys) == [chunk_key("p/s/", n) for n in (2, 9, 10, 100)]
    assert [chunk_position("p/s/", k) for k in keys] == [9, 10, 100, 2]
    assert chunk_position("p/s/", "other/key") == -1


@given(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=40), st.integers(0, 100))
def test_the_window_keeps_at_least_size_ids_and_at_most_one_chunk_more(sizes: list[int], size: int) -> None:
    w = Window(size, "p/")
    added: list[list[str]] = []
    for n, count in enumerate(sizes, 1):
        ids = [f"{n}-{i}" for i in range(count)]
        added.append(ids)
        w.add(chunk_key("p/", n), ids)
        w.evict()
        kept = sum(len(c) for c in w.chunks.values())
        total = sum(len(c) for c in added)
        assert kept >= min(size, total)  # the newest ``size`` ids are always remembered
        oldest = next(iter(w.chunks.values()), [])
        assert kept - len(oldest) < size or not w.chunks  # and no chunk the bound does without
    newest = added[-1]
    assert all(i in w for i in newest) or size == 0


def test_load_replaces_the_window_and_evict_names_the_stored_keys() -> None:
    w = Window(2, "p/")
    w.load({chunk_key("p/", 5): ["a", "b"], chunk_key("p/", 9): ["c", "d"], "p/garbage": ["x"], "p/7": "no"})
    assert "a" in w and "d" in w and "x" not in w and w.last == 9
    assert w.evict() == [chunk_key("p/", 5)]  # the 2 newest ids still cover the size: the oldest chunk goes
    assert "a" not in w and "c" in w
    assert w.evict() == []  # dropping another would leave fewer than 2


def test_routing_keys_are_stable_per_key_and_checked() -> None:
    one = render("cdc.{partition}.{entity}", "public.items", (42,), 8)
    assert one == render("cdc.{partition}.{entity}", "public.items", (42,), 8)
    assert one.startswith("cdc.") and one.endswith(".public.items")
    assert render("{entity}", "my table", (1,), None) == "my_table"
    with pytest.raises(ValueError, match="partitions"):
        RabbitMQSinkConfig(exchange="x", routing_key="{partition}")
    with pytest.raises(ValueError, match="placeholder"):
        RabbitMQSinkConfig(exchange="x", routing_key="{table}")
    with pytest.raises(ValueError, match="255"):
        render("{entity}", "e" * 300, (1,), None)
