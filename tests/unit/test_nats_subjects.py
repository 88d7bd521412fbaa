"""Subject templating and key partitioning of the nats sink, and the source's position handling (no server)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.subjects import entity_token, partition_of, render, stream_subjects
from tidesync.sources.nats.config import NatsSourceConfig
from tidesync.sources.nats.source import NatsSource


def test_render_entity_and_partition() -> None:
    assert render("cdc.{entity}", "public.items", (1,), None) == "cdc.public.items"
    subject = render("cdc.{partition}.{entity}", "items", (42,), 8)
    assert subject == f"cdc.{partition_of((42,), 8)}.items"
    assert entity_token("sheet: leads*>") == "sheet:_leads__"


def test_partition_is_stable_across_processes_and_spreads() -> None:
    code = "from tidesync.sinks.nats.subjects import partition_of; print(partition_of(('a', 7), 16))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(other) == partition_of(("a", 7), 16)  # PYTHONHASHSEED differs per process; this must not
    parts = {partition_of((i,), 8) for i in range(200)}
    assert parts == set(range(8))


def test_stream_subjects_from_the_template() -> None:
    assert stream_subjects("cdc.{entity}") == ["cdc.>"]
    assert stream_subjects("cdc.{partition}.{entity}") == ["cdc.>"]
    assert stream_subjects("orders") == ["orders"]
    with pytest.raises(ValueError):
        stream_subjects("{entity}.x")


@pytest.mark.parametrize(
    "config",
    [
        {"stream": "S", "subject": "cdc.{partition}"},  # {partition} without partitions
        {"stream": "S", "subject": "cdc.{table}"},  # unknown placeholder
        {"stream": "S", "subject": "cdc.*"},  # a wildcard is not a subject to publish to
        {"stream": "has space"},
        {"stream": "S", "max_in_flight": 0},
    ],
)
def test_bad_sink_configs_fail_at_validation(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NatsSinkConfig.model_validate(config)


def test_start_takes_one_of_sequence_or_time() -> None:
    with pytest.raises(ValidationError):
        NatsSourceConfig.model_validate({"stream": "S", "consumer": "c", "start": {}})
    cfg = NatsSourceConfig.model_validate({"stream": "S", "consumer": "c", "start": {"sequence": 5}})
    src = NatsSource(cfg)
    assert src._wanted(None).opt_start_seq == 5
    assert src._wanted(11).opt_start_seq == 11  # a checkpoint wins over the configured start


class _Msg:
    def __init__(self, seq: int, data: bytes = b"{}") -> None:
        self.reply = f"$JS.ACK.S.c.1.{seq}.{seq}.0.0"
        self.data = data
        self.subject = "cdc.items"
        self.headers: dict[str, str] | None = None  # as the driver: None without headers

        class _Seq:
            stream = seq

        class _Meta:
            sequence = _Seq

        self.metadata = _Meta


class _Conn:
    def __init__(self) -> None:
        self.acked: list[str] = []

    async def publish(self, subject: str, payload: bytes) -> None:
        assert payload == b"+ACK"
        self.acked.append(subject)


async def test_positions_acks_only_at_commit_and_redeliveries_are_skipped() -> None:
    from tidesync.event import ChangeEvent, to_json

    src = NatsSource(NatsSourceConfig.model_validate({"stream": "S", "consumer": "c"}))
    conn = _Conn()
    src.nc = conn  # type: ignore[assignment]
    src.last = 3  # opened after the checkpoint (3,)
    ev = to_json(ChangeEvent("items", (1,), "insert", after={"id": 1}, position=("lsn", 9)))

    class _Sub:
        def __init__(self, msgs: list[_Msg]) -> None:
            self.msgs = msgs

        async def fetch(self, batch: int, timeout: float) -> list[_Msg]:
            out, self.msgs = self.msgs, []
            return out

    src.sub = _Sub([_Msg(2, ev), _Msg(4, ev), _Msg(5, b"not json"), _Msg(6, ev)])  # type: ignore[assignment]
    batch = await src.read(2, 0.01)
    assert [e.position for e in batch.events] == [(4,)] and len(batch.rejected) == 1
    assert batch.position == (5,) and batch.rejected[0][0].position == (5,)
    assert conn.acked == [_Msg(2).reply]  # at or before the checkpoint: acked and skipped, never emitted
    batch = await src.read(10, 0.01)  # the rest of the fetch, kept for this read: at most max_events each
    assert batch.position == (6,)
    src.sub = _Sub([_Msg(4, ev)])  # type: ignore[assignment]  # a redelivery of a message the engine holds
    assert (await src.read(10, 0.01)).events == []
    assert conn.acked == [_Msg(2).reply]  # nothing acked before the commit
    await src.commit((5,))
    assert conn.acked == [_Msg(2).reply, _Msg(4).reply, _Msg(5).reply]
    assert list(src.held) == [6]
