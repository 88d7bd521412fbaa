"""Every sink: a duplicate batch changes nothing; a transient fault raises TransientError and a retry lands
once; an event the destination cannot hold raises PermanentError or PartialBatchError naming it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harnesses import SINKS
from tests.conformance.test_sink_contract import _open, ev
from tidesync.errors import DeliveryError, PartialBatchError, PermanentError, SystemicError, TransientError
from tidesync.state.store import StateStore


def _able(case: str) -> list[str]:
    return sorted(name for name, h in SINKS.items() if case not in h.exclusions)


async def test_a_duplicate_batch_changes_nothing(sink_harness: Any, sink_store: StateStore) -> None:
    sink = await _open(sink_harness, sink_store)
    batch = [ev("insert", i, i, name=f"n{i}", qty=i) for i in range(1, 6)]
    batch += [ev("update", 2, 6, qty=20), ev("delete", 5, 7)]
    await sink.write(batch)
    # An edit behind tidesync's back: a second delivery of the same batch must not overwrite it.
    sink_harness.set_column(1, "name", "edited in the destination")
    once = sink_harness.rows()
    await sink.write(batch)
    await sink.close()
    assert sink_harness.rows() == once
    assert once[(2,)]["qty"] == 20 and (5,) not in once and len(once) == 4


def _only_transient(err: DeliveryError) -> bool:
    if isinstance(err, PartialBatchError):  # a sink that reports per event: every event failed transiently
        return bool(err.failures) and all(isinstance(e, TransientError) for e in err.failures.values())
    return isinstance(err, TransientError)


@pytest.mark.parametrize("name", _able("transient_fault"))
async def test_a_transient_fault_raises_transient_and_a_retry_lands_once(
    name: str, tmp_path: Path, sink_store: StateStore
) -> None:
    h = SINKS[name](tmp_path)
    try:
        sink, fault = h.make_faulty_sink()
        await _open(h, sink_store, sink)
        await sink.write([ev("insert", 1, 1, name="a", qty=1)])
        second = [ev("insert", 2, 2, name="b", qty=2), ev("update", 1, 3, qty=10)]
        fault.break_()
        try:
            with pytest.raises(DeliveryError) as failed:
                await sink.write(second)
        finally:
            fault.heal()
        assert _only_transient(failed.value), repr(failed.value)
        await sink.write(second)  # the retry
        await sink.close()
        assert h.rows() == {(1,): {"id": 1, "name": "a", "qty": 10}, (2,): {"id": 2, "name": "b", "qty": 2}}
        if hasattr(h, "receiver"):  # a webhook receiver counts deliveries: each event landed once
            assert set(h.receiver.accepted.values()) == {1} and len(h.receiver.accepted) == 3
    finally:
        h.cleanup()


@pytest.mark.parametrize("name", _able("bad_input"))
async def test_an_event_the_destination_cannot_hold_is_a_permanent_error_naming_it(
    name: str, tmp_path: Path, sink_store: StateStore
) -> None:
    h = SINKS[name](tmp_path)
    try:
        sink = await _open(h, sink_store)
        good1, good2 = ev("insert", 1, 1, name="a", qty=1), ev("insert", 3, 3, name="c", qty=3)
        bad = ev("insert", 2, 2, **h.bad_row)
        with pytest.raises(DeliveryError) as failed:
            await sink.write([good1, bad, good2])
        err = failed.value
        assert not isinstance(err, (TransientError, SystemicError)), repr(err)
        if isinstance(err, PartialBatchError):
            assert set(err.failures) == {1} and isinstance(err.failures[1], PermanentError), err.failures
        else:
            assert isinstance(err, PermanentError), repr(err)
            # All or nothing: the caller splits the batch; the bad event alone fails, the rest are written.
            with pytest.raises(PermanentError):
                await sink.write([bad])
            await sink.write([good1, good2])
        await sink.close()
        assert set(h.rows()) == {(1,), (3,)}
    finally:
        h.cleanup()


@pytest.mark.parametrize("name", _able("slow_destination"))
async def test_a_burst_into_a_slow_destination_waits_and_lands_once(
    name: str, tmp_path: Path, sink_store: StateStore
) -> None:
    """Backpressure at the sink: a write into a destination that holds it (a lock another session holds, a
    receiver that does not answer) waits instead of failing or dropping events, and when the destination
    moves again the whole burst, larger than any chunk a sink sends at once, lands once. A sink that gives
    up waiting says so with a transient error, and the retry lands once."""
    h = SINKS[name](tmp_path)
    try:
        sink = await _open(h, sink_store)
        await sink.write([ev("insert", k, k, name=f"n{k}", qty=k) for k in range(1, 11)])
        burst = [ev("update", i % 10 + 1, 10 + i, qty=1000 + i) for i in range(1, 1201)]
        burst.append(ev("insert", 11, 3000, name="new", qty=11))
        slow = h.make_slow()
        await asyncio.to_thread(slow.hold)
        try:
            write = asyncio.create_task(sink.write(burst))
            done, _ = await asyncio.wait({write}, timeout=0.5)
        finally:
            await asyncio.to_thread(slow.release)
        assert not done, "the write finished while the destination was held: nothing was slow"
        try:
            await write
        except DeliveryError as err:
            assert _only_transient(err), repr(err)
            await sink.write(burst)
        await sink.close()
        last = {e.key: e.after["qty"] for e in burst if e.after is not None}
        expected = {(k,): {"id": k, "name": f"n{k}", "qty": last[(k,)]} for k in range(1, 11)}
        expected[(11,)] = {"id": 11, "name": "new", "qty": 11}
        assert h.rows() == expected
        if hasattr(h, "receiver"):  # each event was accepted once
            assert set(h.receiver.accepted.values()) == {1} and len(h.receiver.accepted) == 10 + len(burst)
    finally:
        h.cleanup()


def test_every_sink_exclusion_is_documented() -> None:
    for name, h in SINKS.items():
        for case, why in h.exclusions.items():
            assert case in {"bad_input", "transient_fault", "slow_destination"} and len(why) > 40, (name, case)
        assert ("slow_destination" in h.exclusions) != hasattr(h, "make_slow"), name
        assert ("bad_input" in h.exclusions) == (h.bad_row is None), name
