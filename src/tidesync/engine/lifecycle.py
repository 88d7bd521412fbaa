"""The pipeline lifecycle as an explicit state machine: the allowed transitions in one table."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RETRYING = "retrying"  # the sink fails transiently; the pipeline waits and probes
    BLOCKED = "blocked"  # every event would fail (missing table, permission): the batch is held, probed
    PAUSED = "paused"  # a person paused it; nothing is read
    DRAINING = "draining"  # shutting down: finishing the in-flight batch
    STOPPED = "stopped"
    FAILED = "failed"  # cannot go on without a person (the status says why)


# Not a lifecycle state but what status shows for a running pipeline whose dead-letter
# queue grew lately (see tidesync.engine.runner.DEGRADED_FOR).
DEGRADED = "degraded"
# Nor is this: what status shows for a pipeline with `schedule:` between its runs (tidesync.engine.schedule).
SCHEDULED = "scheduled"

ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset(
        {State.RUNNING, State.RETRYING, State.BLOCKED, State.DRAINING, State.FAILED, State.STOPPED}
    ),
    State.RUNNING: frozenset({State.RETRYING, State.BLOCKED, State.PAUSED, State.DRAINING, State.FAILED}),
    # RETRYING -> STARTING: a two-way sync (tidesync.sync.runner) cures a failure by starting over
    # (a fresh processor, both sources reopened at their committed positions) after its wait.
    State.RETRYING: frozenset(
        {State.RUNNING, State.STARTING, State.BLOCKED, State.PAUSED, State.DRAINING, State.FAILED}
    ),
    State.BLOCKED: frozenset({State.RUNNING, State.DRAINING, State.FAILED}),
    State.PAUSED: frozenset({State.RUNNING, State.DRAINING, State.FAILED}),
    State.DRAINING: frozenset({State.STOPPED, State.FAILED}),
    State.FAILED: frozenset({State.STARTING}),
}


class IllegalTransition(RuntimeError):
    pass


class Lifecycle:
    """Holds a pipeline's state; ``to`` refuses a transition the table does not allow."""

    def __init__(self, on_change: object = None) -> None:
        self.state = State.STOPPED
        self._on_change = on_change

    def to(self, new: State) -> bool:
        """Move to ``new``; returns False when already there, raises IllegalTransition when not allowed."""
        if new == self.state:
            return False
        if new not in ALLOWED[self.state]:
            raise IllegalTransition(f"pipeline cannot go from {self.state} to {new}")
        old, self.state = self.state, new
        if callable(self._on_change):
            self._on_change(old, new)
        return True
