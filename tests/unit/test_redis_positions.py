"""Positions of the Redis Streams source and sink, and the translation of Redis errors (no server)."""

from __future__ import annotations

import pytest
import redis.exceptions as rx
from hypothesis import given
from hypothesis import strategies as st

from tidesync.errors import PermanentError, SourceError, SourceTransientError, SystemicError, TransientError
from tidesync.event import ChangeEvent
from tidesync.sinks.redis import wire
from tidesync.sinks.redis.sink import decode_position, encode_position, live_events
from tidesync.sources.redis import positions

STREAMS = ["cdc.a", "cdc.b", "cdc.c"]


def test_make_and_parse_round_trip_in_config_order() -> None:
    ids = {"cdc.b": (5, 1), "cdc.a": (3, 0)}
    pos = positions.make(ids, STREAMS)
    assert pos == ("cdc.a", 3, 0, "cdc.b", 5, 1, "cdc.c", 0, 0)
    assert positions.parse(pos, STREAMS) == {"cdc.a": (3, 0), "cdc.b": (5, 1), "cdc.c": (0, 0)}
    assert positions.parse(None, STREAMS) == dict.fromkeys(STREAMS, (0, 0))


def test_a_stream_added_to_the_config_starts_at_zero_and_a_removed_one_is_ignored() -> None:
    old = positions.make({"cdc.a": (9, 0), "cdc.gone": (7, 7)}, ["cdc.a", "cdc.gone"])
    assert positions.parse(old, ["cdc.a", "cdc.new"]) == {"cdc.a": (9, 0), "cdc.new": (0, 0)}


@pytest.mark.parametrize("bad", [(1,), ("cdc.a", 1), ("cdc.a", "1", 0), (3, 1, 0)])
def test_a_position_of_another_source_is_refused(bad: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match="not a Redis source position"):
        positions.parse(bad, STREAMS)


@given(st.lists(st.tuples(st.sampled_from(STREAMS), st.integers(1, 5), st.integers(0, 3)), max_size=60))
def test_positions_handed_out_increase_whatever_the_interleaving_of_streams(
    steps: list[tuple[str, int, int]],
) -> None:
    """Each stream's ids grow; an event's position is the vector after it: successive ones increase as tuples."""
    at = dict.fromkeys(STREAMS, positions.ZERO)
    previous = positions.make(at, STREAMS)
    for stream, dms, seq in steps:
        ms, _ = at[stream]
        at[stream] = (ms + dms, seq)  # a later entry of that stream
        now = positions.make(at, STREAMS)
        assert now > previous
        previous = now


def test_entry_ids_parse_to_ordered_ints() -> None:
    assert wire.entry_id(b"1700000000000-3") == (1700000000000, 3)
    assert wire.entry_id("5") == (5, 0)
    assert wire.entry_id(b"10-0") > wire.entry_id(b"9-99")  # as ints, not as text
    assert wire.id_text(10, 2) == "10-2"


def ev(pos: tuple[object, ...]) -> ChangeEvent:
    return ChangeEvent("items", (1,), "insert", after={"id": 1}, position=pos)


def test_events_at_or_before_the_applied_position_are_skipped_and_the_top_is_stored() -> None:
    events = [ev((1, 0)), ev((2, 0)), ev((3, 0)), ev((4, 1))]
    assert live_events(events, None, False) == ([0, 1, 2, 3], (4, 1))
    assert live_events(events, (2, 0), False) == ([2, 3], (4, 1))
    assert live_events(events, (4, 1), False) == ([], None)
    # a dead-letter replay writes even what is older, and never moves the stored position back
    assert live_events(events[:2], (4, 1), True) == ([0, 1], None)
    assert live_events([ev(())], (4, 1), False) == ([0], None)  # no position: always written


def test_an_applied_position_of_another_source_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="cannot be compared"):
        live_events([ev(("cdc.a", 1, 0))], (5, 0), False)


def test_the_stored_position_round_trips_through_json() -> None:
    for pos in [(1, 2), ("cdc.a", 1700000000000, 3), (2**62, "x")]:
        assert decode_position(encode_position(pos)) == pos
    assert decode_position(None) is None and decode_position(b"") is None


@pytest.mark.parametrize(
    "exc",
    [
        rx.ConnectionError("Error 111 connecting"),
        rx.TimeoutError("Timeout reading"),
        rx.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        rx.ReadOnlyError("READONLY You can't write against a read only replica."),
        rx.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
        rx.ResponseError("MASTERDOWN Link with MASTER is down"),
        rx.ResponseError("BUSY Redis is busy running a script."),
    ],
)
def test_outages_are_transient(exc: Exception) -> None:
    assert isinstance(wire.delivery_error(exc, "redis://:pw@h:1"), TransientError)
    assert isinstance(wire.source_error(exc, "redis://h:1"), SourceTransientError)


@pytest.mark.parametrize(
    "exc",
    [
        rx.AuthenticationError("WRONGPASS invalid username-password pair"),
        rx.NoPermissionError("NOPERM this user has no permissions"),
        rx.ResponseError("WRONGTYPE key cdc.x holds a string, not a stream"),
        rx.ResponseError("ERR something unexpected"),
    ],
)
def test_refusals_every_write_would_meet_are_systemic(exc: Exception) -> None:
    err = wire.delivery_error(exc, "redis://user:s3cret@h:1")
    assert isinstance(err, SystemicError)
    assert "s3cret" not in str(err) and "redis at h:1" in str(err)


def test_a_vanished_group_reopens_the_source_and_other_refusals_stop_it() -> None:
    assert isinstance(wire.source_error(rx.ResponseError("NOGROUP No such key"), "redis://h"), SourceTransientError)
    err = wire.source_error(rx.ResponseError("ERR unknown command"), "redis://h")
    assert isinstance(err, SourceError) and not isinstance(err, SourceTransientError)


def test_a_format_that_cannot_be_written_fails_at_start_with_a_clear_message() -> None:
    from tidesync.errors import ConfigError

    with pytest.raises(ConfigError, match="'json' can only be read"):
        wire.encoder("json")
