"""A `cluster:` config split into captures and partition applies; the balancer's take and hand-over rules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tidesync.config import load_config
from tidesync.engine.balance import Balancer
from tidesync.engine.cluster import plan
from tidesync.errors import ConfigError
from tidesync.state import open_state_store

CONFIG = """\
state: sqlite:///{tmp}/state.db
lease: {{}}
cluster: {{nats: "nats://127.0.0.1:4222,nats://127.0.0.1:4223", stream: CDC, partitions: 3}}
pipelines:
  - name: orders
    source: {{type: postgres, dsn: "postgresql://postgres@127.0.0.1/shop", tables: [orders]}}
    transforms: [{{drop: [secret]}}]
    sink: {{type: postgres, dsn: "postgresql://postgres@127.0.0.1/copy"}}
  - name: crm.v2
    source: {{type: postgres, dsn: "postgresql://postgres@127.0.0.1/crm", tables: [people]}}
    sinks:
      - {{name: pg, type: postgres, dsn: "postgresql://postgres@127.0.0.1/copy"}}
      - {{name: maria, type: mariadb, dsn: "mysql://root@127.0.0.1/copy"}}
"""


def test_each_pipeline_is_one_capture_and_an_apply_per_partition_and_sink_group(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG.format(tmp=tmp_path))
    loaded = load_config(tmp_path / "c.yaml")
    assert loaded.model.cluster is not None
    works = plan(loaded.model.cluster, loaded.pipelines)
    captures = [w for w in works if w.role == "capture"]
    assert [(w.spec.name, w.lease) for w in captures] == [("orders", "pipeline:orders"), ("crm.v2", "pipeline:crm.v2")]
    publish = captures[1].spec.sink
    assert (publish.type, publish.subject, publish.partitions, publish.schemas) == (  # type: ignore[attr-defined]
        "nats",
        "CDC.crm.v2.{partition}",
        3,
        True,
    )
    assert captures[0].spec.transforms == []  # transforms run where the work is spread: in the applies
    applies = [w for w in works if w.role == "apply"]
    assert Counter(w.group for w in applies) == {"orders": 3, "crm.v2.pg": 3, "crm.v2.maria": 3}
    maria = [w for w in applies if w.group == "crm.v2.maria"]
    assert [w.spec.name for w in maria] == ["crm.v2.maria@p0", "crm.v2.maria@p1", "crm.v2.maria@p2"]
    assert [w.lease for w in maria] == [f"apply:crm.v2.maria@p{n}" for n in range(3)]
    consume = maria[2].spec.source
    assert (consume.consumer, consume.subjects, consume.url) == (  # type: ignore[attr-defined]
        "crm_v2_maria-p2",
        ["CDC.crm.v2.2"],
        "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
    )
    assert maria[0].spec.sink.type == "mariadb"  # type: ignore[attr-defined]
    steps = next(w.spec.transforms for w in applies if w.group == "orders")
    assert [s.drop for s in steps] == [["secret"]]


def test_a_cluster_without_a_lease_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CONFIG.format(tmp=tmp_path).replace("lease: {}\n", ""))
    with pytest.raises(ConfigError, match="cluster: needs lease:"):
        load_config(tmp_path / "c.yaml")


async def _balancers(tmp_path: Path, owners: list[str], total: int) -> list[Balancer]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    return [Balancer(store, o, total, ttl=5, every=1) for o in owners]


async def _hold(b: Balancer, *names: str) -> None:
    for n in names:
        got = await b.store.lease_acquire(n, b.owner, 5)  # type: ignore[attr-defined]
        assert got.owner == b.owner
        b.mine.add(n)


async def test_a_newcomer_gets_a_fair_share_and_nobody_takes_beyond_it(tmp_path: Path) -> None:
    a, b = await _balancers(tmp_path, ["A", "B"], total=4)
    assert not a.may_take()  # no view of the cluster yet: nothing is taken blind
    await a.tick()
    assert a.may_take()  # alone: all four are its share
    await _hold(a, *(f"apply:p@p{n}" for n in range(4)))
    await b.tick()
    await a.tick()
    assert (a.members, a.held["A"]) == (["A", "B"], 4)
    # two members: a share of two; A hands over the last two in name order, B may take
    assert [n for n in sorted(a.mine) if a.should_give(n)] == ["apply:p@p2", "apply:p@p3"]
    assert not a.may_take() and b.may_take()
    await b.store.lease_release("apply:p@p3", "A", 1)  # type: ignore[attr-defined]
    a.mine.discard("apply:p@p3")
    await _hold(b, "apply:p@p3")
    await a.tick()
    await b.tick()
    assert b.may_take()
    await b.store.lease_release("apply:p@p2", "A", 1)  # type: ignore[attr-defined]
    a.mine.discard("apply:p@p2")
    await _hold(b, "apply:p@p2")
    await a.tick()
    await b.tick()
    assert not a.may_take() and not b.may_take()  # two each: balanced, nobody moves
    assert not any(a.should_give(n) for n in a.mine) and not any(b.should_give(n) for n in b.mine)


async def test_with_a_remainder_one_holder_lets_one_go_to_a_member_holding_nothing(tmp_path: Path) -> None:
    a, b, c = await _balancers(tmp_path, ["A", "B", "C"], total=4)
    for x in (a, b, c):
        await x.tick()
    await _hold(a, "apply:p@p0", "apply:p@p1")
    await _hold(b, "apply:p@p2", "apply:p@p3")
    for x in (a, b, c):
        await x.tick()
    # shares: at most 2, at least 1; C holds none: the first holder at the top (A) gives one, B keeps both
    assert [n for n in a.mine if a.should_give(n)] == ["apply:p@p1"]
    assert not any(b.should_give(n) for n in b.mine)
    assert c.may_take() and not a.may_take() and not b.may_take()


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_member_gone_silent_does_not_keep_the_others_from_taking(tmp_path: Path) -> None:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    clock = _Clock()
    a, b = (Balancer(store, o, 3, ttl=5, every=1, clock=clock) for o in ("A", "B"))
    await b.tick()  # B was seen, then killed: it holds nothing and says nothing more
    await _hold(a, "apply:p@p0")
    await a.tick()
    assert a.members == ["A", "B"] and not a.may_take()  # B, holding nothing, takes first
    clock.now += 3.5  # three ticks later: B is still a member (younger than the TTL), but not waited for
    await a.tick()
    assert a.members == ["A", "B"] and a.may_take()
    clock.now += 2  # past the TTL: B is gone, A's share is all three
    await a.tick()
    assert a.members == ["A"] and a.may_take()
    await store.close()
