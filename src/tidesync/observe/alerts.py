"""Alerts as explicit state machines (pure: values and ``now`` in, notices out).

One :class:`Alert` per (rule, pipeline). Its phases and the allowed moves::

    ok ──value > above──▶ pending ──held `for` seconds──▶ firing ──value < clear_below──▶ ok
     │                      │                              ▲
     │                      └──value ≤ above──▶ ok         │
     └──value > above and `for` is 0───────────────────────┘

Metric values are never negative, so a ``clear_below`` of 0 clears at 0: an
alert on "above 0" (a dead-letter queue not empty, a pipeline blocked) clears
once the value is back to 0.

Exactly one ``fired`` notice is produced on the move into firing and exactly
one ``cleared`` notice on the move out of it; nothing else produces a notice,
so a value that stays high, or wobbles between ``clear_below`` and ``above``
(the hysteresis band), never repeats one. A value of None (no data: no events
in a latency window, a slot not read yet) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

FIRED: Final = "fired"
CLEARED: Final = "cleared"


class Phase(StrEnum):
    OK = "ok"
    PENDING = "pending"  # above the threshold, waiting for `for` to pass
    FIRING = "firing"


ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.OK: frozenset({Phase.PENDING, Phase.FIRING}),
    Phase.PENDING: frozenset({Phase.OK, Phase.FIRING}),
    Phase.FIRING: frozenset({Phase.OK}),
}


@dataclass(frozen=True, slots=True)
class Threshold:
    above: float
    clear_below: float
    for_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.clear_below > self.above:
            raise ValueError("clear_below must not be above `above`")


@dataclass(frozen=True, slots=True)
class Notice:
    """One fire or clear of one alert."""

    rule: str
    pipeline: str
    metric: str
    kind: str  # FIRED or CLEARED
    value: float
    threshold: float  # `above` for a fire, `clear_below` for a clear
    at: float  # epoch seconds
    firing_since: float  # when it fired (for a clear: how long it fired)

    @property
    def message(self) -> str:
        what = f"alert {self.rule} {self.kind} for pipeline {self.pipeline}: {self.metric} {self.value:g}"
        if self.kind == FIRED:
            return f"{what} > {self.threshold:g}"
        below = "<" if self.value < self.threshold else "<="
        return f"{what} {below} {self.threshold:g} (fired {self.at - self.firing_since:.0f}s ago)"


class Alert:
    def __init__(self, rule: str, pipeline: str, metric: str, threshold: Threshold) -> None:
        self.rule = rule
        self.pipeline = pipeline
        self.metric = metric
        self.threshold = threshold
        self.phase = Phase.OK
        self.since = 0.0  # when the current phase began (0: never left ok)
        self.value: float | None = None  # the last value seen

    def _to(self, phase: Phase, now: float) -> None:
        if phase not in ALLOWED[self.phase]:
            raise RuntimeError(f"alert {self.rule}/{self.pipeline} cannot go from {self.phase} to {phase}")
        self.phase, self.since = phase, now

    def step(self, value: float | None, now: float) -> Notice | None:
        """Feed the current value; return the notice this produces, if any."""
        if value is None:
            return None
        self.value = value
        t = self.threshold
        if self.phase == Phase.OK:
            if value <= t.above:
                return None
            if t.for_seconds > 0:
                self._to(Phase.PENDING, now)
                return None
            return self._fire(value, now)
        if self.phase == Phase.PENDING:
            if value <= t.above:
                self._to(Phase.OK, now)
                return None
            if now - self.since >= t.for_seconds:
                return self._fire(value, now)
            return None
        if value < t.clear_below or (t.clear_below <= 0 and value <= 0):
            fired_at = self.since
            self._to(Phase.OK, now)
            return Notice(self.rule, self.pipeline, self.metric, CLEARED, value, t.clear_below, now, fired_at)
        return None

    def _fire(self, value: float, now: float) -> Notice:
        self._to(Phase.FIRING, now)
        return Notice(self.rule, self.pipeline, self.metric, FIRED, value, self.threshold.above, now, now)
