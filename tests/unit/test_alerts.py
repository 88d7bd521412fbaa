"""The alert state machine and its evaluation on a fake clock: one fire per crossing, one clear per recovery."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.config import load_config_text
from tidesync.errors import ConfigError
from tidesync.observe.alerting import AlertBook, notice_event
from tidesync.observe.alerts import ALLOWED, CLEARED, FIRED, Alert, Phase, Threshold
from tidesync.observe.alerts_config import AlertRuleConfig, AlertsConfig
from tidesync.observe.latency import LatencyWindow
from tidesync.observe.monitor import Monitor
from tidesync.testing import FakeClock


def alert(above: float = 10, clear_below: float | None = None, for_seconds: float = 0) -> Alert:
    return Alert(
        "lag", "p", "lag_seconds", Threshold(above, above if clear_below is None else clear_below, for_seconds)
    )


def test_fires_once_when_crossed_and_clears_once_when_it_drops() -> None:
    clock = FakeClock()
    a = alert(above=10, clear_below=5)
    kinds = []
    for value in [0, 3, 11, 50, 12, 7, 9, 20, 4, 0, 0, 11]:
        clock.advance(1)
        n = a.step(value, clock.time())
        if n is not None:
            kinds.append((n.kind, value))
    # 7 and 9 sit in the hysteresis band (between clear_below and above): no clear, no second fire
    assert kinds == [(FIRED, 11), (CLEARED, 4), (FIRED, 11)]
    assert a.phase == Phase.FIRING


def test_for_duration_needs_the_value_to_stay_above() -> None:
    clock = FakeClock()
    a = alert(above=10, for_seconds=30)
    assert a.step(20, clock.time()) is None and a.phase == Phase.PENDING
    clock.advance(20)
    assert a.step(5, clock.time()) is None and a.phase == Phase.OK  # dipped: the wait starts over
    assert a.step(20, clock.time()) is None
    clock.advance(29)
    assert a.step(20, clock.time()) is None and a.phase == Phase.PENDING
    clock.advance(1)
    fired = a.step(20, clock.time())
    assert fired is not None and fired.kind == FIRED and fired.at == clock.time()
    clock.advance(15)
    cleared = a.step(1, clock.time())
    assert cleared is not None and cleared.kind == CLEARED and cleared.firing_since == fired.at
    assert "fired 15s ago" in cleared.message


def test_no_data_changes_nothing() -> None:
    a = alert()
    assert a.step(None, 1.0) is None and a.phase == Phase.OK
    a.step(11, 2.0)
    assert a.step(None, 3.0) is None and a.phase == Phase.FIRING


def test_the_transition_table_is_enforced() -> None:
    a = alert()
    with pytest.raises(RuntimeError):
        a._to(Phase.OK, 0.0)  # already ok: not a move the table has
    assert Phase.PENDING not in ALLOWED[Phase.FIRING]


@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200),
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=1),
    st.sampled_from([0.0, 2.0, 5.0]),
)
def test_notices_alternate_and_follow_the_thresholds(
    values: list[float], above: float, band: float, for_seconds: float
) -> None:
    a = alert(above=above, clear_below=above * band, for_seconds=for_seconds)
    notices = []
    for i, v in enumerate(values):
        n = a.step(v, float(i))
        if n is not None:
            notices.append(n)
            # a clear_below of 0 clears at 0 (values are never negative, so it could not clear otherwise)
            clears = v < above * band or (above * band <= 0 and v <= 0)
            assert (n.kind == FIRED and v > above) or (n.kind == CLEARED and clears)
    kinds = [n.kind for n in notices]
    assert kinds == [FIRED, CLEARED] * (len(kinds) // 2) + ([FIRED] if len(kinds) % 2 else [])
    assert (a.phase == Phase.FIRING) == (len(kinds) % 2 == 1)


# --- evaluation on a timer, with a fake clock -------------------------------------------------------


class FakeRunner:
    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.clock = clock
        self.state_name = "running"
        self.oldest: float | None = None
        self.stats = SimpleNamespace(latency=LatencyWindow())
        self.source = object()

    def lag_seconds(self) -> float:
        return 0.0 if self.oldest is None else self.clock.time() - self.oldest


class FakeStore:
    def __init__(self) -> None:
        self.depth = 0

    async def dlq_count(self, pipeline: str | None = None) -> int:
        return self.depth

    async def kv_scan(self, namespace: str, prefix: str = "") -> dict[str, Any]:
        return {}


def rules(*raw: dict[str, Any]) -> AlertsConfig:
    return AlertsConfig.model_validate({"interval": "2s", "builtin": False, "rules": list(raw)})


async def test_the_monitor_evaluates_every_interval_on_its_clock(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    runner = FakeRunner("p", clock)
    engine = SimpleNamespace(runners=[runner])
    store = FakeStore()
    cfg = rules(
        {"name": "lag", "metric": "lag_seconds", "above": 30, "clear_below": 5},
        {"name": "dlq", "metric": "dlq_depth", "above": 0},
        {"name": "stuck", "metric": "retrying_seconds", "above": 60, "for": "10s"},
        {"name": "slow", "metric": "latency_p99_seconds", "above": 1.0, "window": 30},
    )
    monitor = Monitor(engine, store, alerts=cfg, clock=clock)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, "tidesync.alerts")

    async def ticks(n: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(n):
            out += [(x.rule, x.kind) for x in await monitor.tick()]
            clock.advance(monitor.interval)
        return out

    assert await ticks(3) == []
    runner.oldest = clock.time()  # the sink stops acknowledging: lag grows with the clock
    runner.state_name = "retrying"
    got = await ticks(40)  # 80 s
    assert got.count(("lag", FIRED)) == 1 and got.count(("stuck", FIRED)) == 1
    assert ("lag", CLEARED) not in got
    store.depth = 3
    runner.oldest = None  # caught up
    runner.state_name = "running"
    runner.stats.latency.record(clock.time(), [clock.time() - 2.5] * 10)  # slow events were applied
    assert sorted(await ticks(5)) == sorted([("dlq", FIRED), ("lag", CLEARED), ("slow", FIRED), ("stuck", CLEARED)])
    clock.advance(31)  # the slow events left the 30 s window: no data, so the alert holds
    assert await ticks(3) == []
    runner.stats.latency.record(clock.time(), [clock.time() - 0.01] * 10)
    assert await ticks(1) == [("slow", CLEARED)]
    fired = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert fired and all("fired" in m for m in fired) and len(fired) == 4
    assert {a.rule: str(a.phase) for a in monitor.book.alerts} == {
        "lag": "ok",
        "dlq": "firing",
        "stuck": "ok",
        "slow": "ok",
    }


async def test_the_loop_sleeps_on_the_injected_clock() -> None:
    clock = FakeClock()
    runner = FakeRunner("p", clock)
    monitor = Monitor(SimpleNamespace(runners=[runner]), FakeStore(), alerts=rules(), clock=clock)  # type: ignore[arg-type]
    await monitor.start()
    for _ in range(20):
        await asyncio.sleep(0)
    await monitor.stop()
    assert clock.sleeps and set(clock.sleeps) == {2.0}


def test_rules_apply_per_pipeline() -> None:
    book = AlertBook([AlertRuleConfig.model_validate({"name": "x", "metric": "dlq_depth", "above": 1})], ["a", "b"])
    assert [a.pipeline for a in book.alerts] == ["a", "b"]
    only = AlertRuleConfig.model_validate({"name": "y", "metric": "dlq_depth", "above": 1, "pipelines": ["b"]})
    assert [a.pipeline for a in AlertBook([only], ["a", "b"]).alerts] == ["b"]


def test_a_notice_has_a_stable_distinct_webhook_event() -> None:
    a = alert()
    fired = a.step(11, 100.0)
    cleared = a.step(1, 160.0)
    assert fired is not None and cleared is not None
    e1, e2 = notice_event(fired, 1), notice_event(cleared, 2)
    assert (e1.entity, e1.op, e2.op) == ("tidesync.alert", "fired", "cleared")
    assert e1.position != e2.position and e1 == notice_event(fired, 1)
    assert e1.after is not None and e1.after["message"].startswith("alert lag fired")


CONFIG = """\
pipelines:
  - name: p1
    source: {type: sqlite, path: /tmp/x.db, tables: [t]}
    sink: {type: sqlite, path: /tmp/y.db}
alerts:
  rules:
"""


@pytest.mark.parametrize(
    ("rule", "where", "message"),
    [
        ("    - {name: a, metric: lag, above: 1}", "alerts.rules[0].metric", "Input should be"),
        ("    - {name: a, metric: dlq_depth, above: 5, clear_below: 9}", "alerts.rules[0]", "clear_below (9) must not"),
        (
            "    - {name: a, metric: dlq_depth, above: 1, pipelines: [nope]}",
            "alerts.rules[0].pipelines[0]",
            "no pipeline",
        ),
        ("    - {name: a, metric: dlq_depth, abve: 1}", "alerts.rules[0].abve", "unknown key"),
        (
            "    - {name: a, metric: dlq_depth, above: 1}\n    - {name: a, metric: lag_seconds, above: 1}",
            "alerts.rules[1].name",
            "duplicate alert name",
        ),
    ],
)
def test_config_errors_name_the_key_and_line(rule: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(CONFIG + rule + "\n")
    text = str(info.value)
    assert f"<config>:{CONFIG.count(chr(10)) + 1 + ('rules[1]' in where)}: {where}: " in text, text
    assert message in text


def test_a_webhook_needs_a_standard_secret() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.webhook\.secrets"):
        load_config_text(CONFIG + "    []\n  webhook: {url: 'https://x.example', secrets: 'not-a-whsec-value'}\n")
    ok = load_config_text(
        CONFIG + "    []\n  webhook: {url: 'https://x.example', secrets: 'whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ='}\n"
    )
    assert ok.model.alerts is not None and ok.model.alerts.webhook is not None
