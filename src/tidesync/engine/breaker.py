"""The circuit breaker: a run of dead letters of one error class means the cause is not the events.

The second line of defence behind :class:`~tidesync.errors.SystemicError`: a
sink that cannot tell a systemic failure from a per-event one (a destination
that rejects every row with the same constraint error, say) would otherwise
fill the dead-letter queue with good events. The breaker watches what the
delivery policy is about to dead-letter, in source order:

- an event written resets the run;
- an event failing with error class ``c`` extends the run if the run is of
  ``c``, else starts a new run of ``c``;
- the breaker *trips* when the run holds ``events`` events, or has lasted
  ``seconds`` with at least ``MIN_EVENTS`` events (so two poison rows an idle
  hour apart never trip it).

While tripped, a failure of the same class is held (the pipeline blocks and
probes) instead of dead-lettered; a success or a failure of another class
ends it. Events parked behind an earlier dead letter of their key (class
``blocked``) are not counted: they did not fail. Pure: time comes in as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_EVENTS = 10  # the time rule needs at least this many failures in the run


@dataclass(slots=True)
class CircuitBreaker:
    events: int = 100  # 0: no limit by count
    seconds: float = 60.0  # 0: no limit by time
    error_class: str | None = None  # the class of the current run
    count: int = 0  # events in the current run
    since: float = 0.0  # when the run began

    def written(self) -> None:
        """An event was written: the run (and a trip) ends."""
        self.error_class, self.count = None, 0

    def failed(self, error_class: str, now: float) -> bool:
        """One more event failed with ``error_class``; True when the breaker is (now) tripped."""
        if error_class == "blocked":
            return self.tripped(error_class, now)
        if error_class != self.error_class:
            self.error_class, self.count, self.since = error_class, 0, now
        self.count += 1
        return self.tripped(error_class, now)

    def tripped(self, error_class: str, now: float) -> bool:
        """Would a failure of ``error_class`` now be held rather than dead-lettered?"""
        if error_class != self.error_class or self.count == 0:
            return False
        if self.events and self.count >= self.events:
            return True
        return bool(self.seconds) and self.count >= MIN_EVENTS and now - self.since >= self.seconds

    def describe(self, now: float) -> str:
        return f"{self.count} consecutive events failed with {self.error_class} in {max(0.0, now - self.since):.0f}s"
