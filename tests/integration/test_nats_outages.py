"""JetStream refusing the nats sink, on the real nats-server: no responders (a subject no stream captures, the
stream deleted under a running pipeline) and a full stream with ``discard: new``. Each is a transient error:
the pipeline shows ``retrying`` with the error and its next attempt, backs off, and once the condition clears
every event is stored, once, in per-key order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from tests.conformance.nats_harness import URL, delete_stream
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.event import ChangeEvent, from_json
from tidesync.retry import RetryPolicy
from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.sink import NatsSink
from tidesync.sinks.webhook.envelope import idempotency_id
from tidesync.state import open_state_store
from tidesync.state.store import PipelineStatus, StateStore
from tidesync.testing import ListSource, eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.open()
    yield s
    await s.close()


class Feed:
    """An iterator a test appends events to while the pipeline runs (exhausted now, more later)."""

    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []
        self.i = 0

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> ChangeEvent:
        if self.i >= len(self.events):
            raise StopIteration
        self.i += 1
        return self.events[self.i - 1]


def events(start: int, stop: int) -> list[ChangeEvent]:
    """Event n (position (n,), as ListSource stamps it) sets key n % 4 to value n: per key, increasing."""
    return [
        ChangeEvent("items", (n % 4,), "update", after={"id": n % 4, "v": n}, changed=("v",), position=(n,))
        for n in range(start, stop)
    ]


@asynccontextmanager
async def js_client() -> AsyncIterator[Any]:
    nc = await nats.connect(URL)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@asynccontextmanager
async def pipeline(sink: NatsSink, store: StateStore, feed: Feed) -> AsyncIterator[PipelineRunner]:
    runner = PipelineRunner(
        "p", ListSource(feed), sink, store, batch=BatchPolicy(10, 0.01),
        retry=RetryPolicy(initial_delay=0.05, max_delay=0.2),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def retrying(store: StateStore, error: str) -> PipelineStatus:
    async def check() -> PipelineStatus | None:
        st = await store.status_get("p")
        ok = st is not None and st.state == "retrying" and error in (st.last_error or "") and st.next_attempt_at
        return st if ok else None

    got: PipelineStatus = await eventually(check, timeout=10, message=f"status retrying with {error!r}")
    return got


class Stored:
    """Reads what the stream stored since the last look (a consumer's view), optionally deleting it after."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.seen = 0
        self.ids: list[str] = []
        self.events: list[ChangeEvent] = []

    async def take(self, *, purge: bool = False) -> None:
        async with js_client() as js:
            last = (await js.stream_info(self.stream)).state.last_seq
            for seq in range(self.seen + 1, last + 1):
                msg = await js.get_msg(self.stream, seq)
                self.ids.append((msg.headers or {})["Nats-Msg-Id"])
                self.events.append(from_json(msg.data))
            self.seen = last
            if purge:
                await js.purge_stream(self.stream, seq=last + 1)  # only what was read

    def check(self, expected: list[ChangeEvent]) -> None:
        """Every expected event stored exactly once, and each key's values in order."""
        assert sorted(self.ids) == sorted(idempotency_id("p", "sink", e) for e in expected)
        assert len(set(self.ids)) == len(self.ids)
        for key in range(4):
            values = [e.after["v"] for e in self.events if e.key == (key,) and e.after]
            assert values == sorted(values), f"key {key} out of order: {values}"


def sink_for(stream: str, subject: str, **extra: Any) -> NatsSink:
    return NatsSink(
        NatsSinkConfig.model_validate({"url": URL, "stream": stream, "subject": subject, "timeout": 2, **extra})
    )


async def test_a_subject_no_stream_captures_retries_until_the_stream_takes_it(store: StateStore) -> None:
    stream, token = f"OUTNR_{uuid.uuid4().hex[:10]}", f"outnr{uuid.uuid4().hex[:10]}"
    try:
        async with js_client() as js:
            await js.add_stream(StreamConfig(name=stream, subjects=[f"{token}.other.>"]))
        feed = Feed()
        feed.events += events(0, 30)
        sink = sink_for(stream, f"{token}.cdc.{{entity}}", create_stream=False)
        async with pipeline(sink, store, feed) as runner:
            st = await retrying(store, "no stream answers")
            assert stream in (st.last_error or "")
            assert runner.position is None  # nothing checkpointed while refused
            async with js_client() as js:  # the operator adds the subject: the condition clears
                await js.update_stream(StreamConfig(name=stream, subjects=[f"{token}.>"]))
            await eventually(lambda: runner.position == (29,), timeout=10, message="every event written")
        stored = Stored(stream)
        await stored.take()
        stored.check(feed.events)
    finally:
        await delete_stream(stream)


async def test_the_stream_deleted_while_running_retries_until_it_is_back(store: StateStore) -> None:
    stream, token = f"OUTDEL_{uuid.uuid4().hex[:10]}", f"outdel{uuid.uuid4().hex[:10]}"
    try:
        feed = Feed()
        feed.events += events(0, 10)
        sink = sink_for(stream, f"{token}.{{entity}}")  # creates its stream at open
        async with pipeline(sink, store, feed) as runner:
            await eventually(lambda: runner.position == (9,), timeout=10, message="the first events written")
            await delete_stream(stream)
            feed.events += events(10, 30)
            await retrying(store, "no stream answers")
            async with js_client() as js:  # the operator recreates it
                await js.add_stream(StreamConfig(name=stream, subjects=[f"{token}.>"]))
            await eventually(lambda: runner.position == (29,), timeout=10, message="the later events written")
            st = await eventually(lambda: _running(store), timeout=5, message="status back to running")
            assert st.last_error is None
        stored = Stored(stream)
        await stored.take()
        stored.check(feed.events[10:])  # the first ten went with the deleted stream
    finally:
        await delete_stream(stream)


async def test_a_full_stream_with_discard_new_retries_as_messages_are_deleted(store: StateStore) -> None:
    stream, token = f"OUTFULL_{uuid.uuid4().hex[:10]}", f"outfull{uuid.uuid4().hex[:10]}"
    try:
        async with js_client() as js:
            await js.add_stream(
                StreamConfig(name=stream, subjects=[f"{token}.>"], max_msgs=5, discard=DiscardPolicy.NEW)
            )
        feed = Feed()
        feed.events += events(0, 30)
        sink = sink_for(stream, f"{token}.{{entity}}", create_stream=False)
        stored = Stored(stream)
        async with pipeline(sink, store, feed) as runner:
            st = await retrying(store, "maximum messages exceeded")
            assert "10077" in (st.last_error or "")  # JetStream's error code, named in the status

            async def consumed() -> bool:  # a consumer reads and deletes: room for the next five
                await stored.take(purge=True)
                return runner.position == (29,)

            await eventually(consumed, timeout=15, interval=0.05, message="every event written")
        await stored.take()
        stored.check(feed.events)
        assert sink.duplicates > 0  # re-publishes of the stored ones were dropped by Nats-Msg-Id
    finally:
        await delete_stream(stream)


async def _running(store: StateStore) -> PipelineStatus | None:
    st = await store.status_get("p")
    return st if st is not None and st.state == "running" else None
