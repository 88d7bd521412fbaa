"""StateChanges.merge: two change sets as one, the later word on each key winning."""

from __future__ import annotations

from tidesync.event import ChangeEvent
from tidesync.state.store import NewDeadLetter, PipelineStatus, ShadowRow, StateChanges


def row(key: int, v: int, scope: str = "p") -> ShadowRow:
    return ShadowRow(scope, "t", (key,), {"v": v})


def test_a_put_after_a_delete_of_its_key_wins() -> None:
    # The store applies puts before deletes: the earlier delete must go, or it would erase the put.
    merged = StateChanges(shadow_delete=[("p", "t", (1,))]).merge(StateChanges(shadow_put=[row(1, 2)]))
    assert merged.shadow_put == [row(1, 2)]
    assert merged.shadow_delete == []


def test_a_delete_after_a_put_of_its_key_wins() -> None:
    merged = StateChanges(shadow_put=[row(1, 1), row(2, 2)]).merge(StateChanges(shadow_delete=[("p", "t", (1,))]))
    assert merged.shadow_put == [row(2, 2)]
    assert merged.shadow_delete == [("p", "t", (1,))]


def test_a_later_put_replaces_an_earlier_one_and_other_keys_stay() -> None:
    first = StateChanges(shadow_put=[row(1, 1), row(2, 2)], shadow_delete=[("p", "t", (3,))])
    then = StateChanges(shadow_put=[row(3, 3), row(1, 10)], shadow_delete=[("p", "t", (4,))])
    merged = first.merge(then)
    assert merged.shadow_put == [row(2, 2), row(3, 3), row(1, 10)]
    assert merged.shadow_delete == [("p", "t", (4,))]


def test_keys_are_scope_entity_and_key() -> None:
    # A delete in another scope or entity is a different record: both changes stay.
    other_entity = ("p", "u", (1,))
    merged = StateChanges(shadow_put=[row(1, 1)]).merge(StateChanges(shadow_delete=[("q", "t", (1,)), other_entity]))
    assert merged.shadow_put == [row(1, 1)]
    assert merged.shadow_delete == [("q", "t", (1,)), other_entity]


def test_kv_puts_and_deletes_follow_the_same_rule() -> None:
    first = StateChanges(kv_put={("ns", "a"): 1, ("ns", "b"): 2}, kv_delete=[("ns", "c")])
    then = StateChanges(kv_put={("ns", "c"): 3, ("ns", "b"): 20}, kv_delete=[("ns", "a")])
    merged = first.merge(then)
    assert merged.kv_put == {("ns", "b"): 20, ("ns", "c"): 3}
    assert merged.kv_delete == [("ns", "a")]


def test_the_rest_accumulates_or_takes_the_later_value() -> None:
    event = ChangeEvent("t", (1,), "insert", after={"v": 1})
    one = NewDeadLetter("p", "sink", event, "transient", "down")
    two = NewDeadLetter("p", "sink", event, "permanent", "bad")
    running = PipelineStatus("p", state="running")
    first = StateChanges(checkpoint=(1,), dead_letters=[one], dlq_remove=[7], status=running, events_applied=2)
    merged = first.merge(StateChanges(dead_letters=[two], dlq_remove=[8], events_applied=3))
    assert (merged.checkpoint, merged.status, merged.events_applied) == ((1,), running, 5)
    assert (merged.dead_letters, merged.dlq_remove) == ([one, two], [7, 8])
    stopped = PipelineStatus("p", state="stopped")
    later = first.merge(StateChanges(checkpoint=(2,), status=stopped))
    assert (later.checkpoint, later.status) == ((2,), stopped)


def test_merge_modifies_neither_side_and_keeps_empty_empty() -> None:
    first = StateChanges(shadow_put=[row(1, 1)], kv_put={("ns", "a"): 1})
    then = StateChanges(shadow_delete=[("p", "t", (1,))], kv_delete=[("ns", "a")])
    merged = first.merge(then)
    assert merged is not first and merged is not then
    assert first == StateChanges(shadow_put=[row(1, 1)], kv_put={("ns", "a"): 1})
    assert then == StateChanges(shadow_delete=[("p", "t", (1,))], kv_delete=[("ns", "a")])
    assert StateChanges().merge(StateChanges()).is_empty()
