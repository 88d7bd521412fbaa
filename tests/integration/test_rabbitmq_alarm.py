"""A RabbitMQ resource alarm under a running pipeline: the broker blocks publishers, the sink sees no
confirm in time, and the pipeline retries (visibly) until the alarm clears; then every event is on the
queue once, per key in order.

The memory alarm is raised for real, by setting the broker's memory high watermark below what it uses
(``rabbitmqctl set_vm_memory_high_watermark``). That blocks every publisher of the shared broker, so the
test runs alone (serial).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conformance.rabbitmq_harness import URL, declare, delete, take_all
from tests.integration.test_nats_outages import Feed, events, retrying
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.event import from_json
from tidesync.retry import RetryPolicy
from tidesync.sinks.rabbitmq.config import RabbitMQSinkConfig
from tidesync.sinks.rabbitmq.sink import RabbitMQSink
from tidesync.state import open_state_store
from tidesync.state.store import StateStore
from tidesync.testing import ListSource, eventually, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # blocks every publisher of the shared broker


def _watermark(value: str) -> None:
    subprocess.run(["rabbitmqctl", "set_vm_memory_high_watermark", value], check=True, capture_output=True, timeout=60)


def _memory_alarm() -> bool:
    out = subprocess.run(["rabbitmqctl", "status"], check=True, capture_output=True, text=True, timeout=60)
    return "Memory alarm" in out.stdout


@pytest.fixture
def alarm() -> Iterator[None]:
    """Raise the memory alarm for the test's duration; always clear it afterwards."""
    try:
        yield
    finally:
        _watermark("0.4")  # RabbitMQ's default


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await s.open()
    yield s
    await s.close()


async def test_a_memory_alarm_blocks_publishes_until_it_clears_and_loses_nothing(
    store: StateStore, alarm: None
) -> None:
    name = f"tsalarm.{uuid.uuid4().hex[:10]}"
    await declare(name, name, "#")
    feed = Feed()
    feed.events += events(0, 20)
    sink = RabbitMQSink(RabbitMQSinkConfig.model_validate({"url": URL, "exchange": name, "routing_key": "{entity}",
                                                           "timeout": 1}))  # fmt: skip
    runner = PipelineRunner(
        "p", ListSource(feed), sink, store, batch=BatchPolicy(10, 0.01),
        retry=RetryPolicy(initial_delay=0.1, max_delay=0.5),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: store.load_checkpoint("p"), message="the first events published")
        await eventually(lambda: runner.position == (19,), message="all 20 published before the alarm")
        _watermark("0.000001")  # below what the broker uses: the memory alarm goes off
        await asyncio.to_thread(wait_until, _memory_alarm, 30, 0.5, "the memory alarm")
        feed.events += events(20, 40)
        status = await retrying(store, "no publisher confirm in time")
        assert status.next_attempt_at is not None
        assert runner.position == (19,)  # nothing past the alarm was checkpointed
        _watermark("0.4")  # the alarm clears; the broker reads the publishes again
        await eventually(lambda: runner.position == (39,), timeout=30, message="every event published after")
        assert (await store.status_get("p")).state == "running"  # type: ignore[union-attr]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        got = await take_all(name)
        await delete(name, name)
    decoded = [from_json(body) for _, body in got]
    ids = [mid for mid, _ in got]
    # At least once across the alarm (a confirm that timed out may still have been stored): a copy carries the
    # same message id, which the rabbitmq source drops. Every event is there, each key's values in order.
    assert {e.after["v"] for e in decoded if e.after} == set(range(40))
    assert len(set(ids)) == 40  # one message id per event, copies included
    for key in range(4):
        values = [e.after["v"] for e in decoded if e.key == (key,) and e.after]
        firsts = list(dict.fromkeys(values))
        assert firsts == sorted(firsts), f"key {key} out of order: {values}"
