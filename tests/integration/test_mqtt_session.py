"""The mqtt source's durability on the real Mosquitto: its session outlives the process, and a message is
acknowledged to the broker only once it is journaled."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.mqtt_harness import drop_session, publish
from tidesync.errors import SourceTransientError, StateStoreError
from tidesync.event import ChangeEvent, to_json
from tidesync.protocols import Context
from tidesync.sources.mqtt.config import MqttSourceConfig
from tidesync.sources.mqtt.source import MqttSource
from tidesync.state import open_state_store
from tidesync.testing import eventually

URL = "mqtt://127.0.0.1:1883"


class JournalDown:
    """A state store whose journal refuses appends (a full disk, a lost state database)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def journal_append(self, entries: Any) -> Any:
        self.refused += 1
        raise StateStoreError("the state store is down")


def event(i: int) -> bytes:
    return to_json(ChangeEvent("items", (i,), "insert", after={"id": i}))


async def _read_all(source: MqttSource, want: int) -> list[ChangeEvent]:
    got: list[ChangeEvent] = []
    for _ in range(100):
        got.extend((await source.read(100, 0.05)).events)
        if len(got) >= want:
            break
    return got


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    run = uuid.uuid4().hex[:10]
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    config = MqttSourceConfig(url=URL, topics=[f"sess{run}/#"], client_id=f"sess-{run}")
    yield run, store, config
    await drop_session(config.client_id or "")
    await store.close()


async def test_what_is_published_while_the_source_is_down_arrives_after_it_restarts(setup: Any) -> None:
    run, store, config = setup
    ctx = Context(pipeline="p", name="source", state=store)
    first = MqttSource(config)
    await first.open(ctx, None)  # the session and its subscription exist from here on
    await first.close()
    await publish(f"sess{run}/items", [event(i) for i in range(5)])
    again = MqttSource(config)
    await again.open(ctx, None)
    got = await _read_all(again, 5)
    await again.close()
    assert [e.key for e in got] == [(i,) for i in range(5)]


async def test_a_message_is_acknowledged_only_once_journaled(setup: Any) -> None:
    run, store, config = setup
    down = JournalDown(store)
    failing = MqttSource(config)
    await failing.open(Context(pipeline="p", name="source", state=down), None)
    await publish(f"sess{run}/items", [event(1), event(2)])
    await eventually(lambda: down.refused > 0, timeout=10, message="the message reached the source")
    with pytest.raises(SourceTransientError, match="state store is down"):
        for _ in range(100):
            await failing.read(10, 0.05)
    await failing.close()
    # Never acknowledged: the broker hands both messages to the session again.
    again = MqttSource(config)
    await again.open(Context(pipeline="p", name="source", state=store), None)
    got = await _read_all(again, 2)
    await again.close()
    assert [e.key for e in got] == [(1,), (2,)]
