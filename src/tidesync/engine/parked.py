"""The keys a sink's dead-letter queue holds back: per-key order across parks, restarts and replays.

:class:`ParkedKeys` maps the (entity, key) of every event waiting in the
dead-letter queue of one pipeline and sink to the newest position parked for
it. An event of such a key must not overtake it:

- a later event (a position after the newest parked one) is parked behind it,
  class ``blocked``;
- an event at or before that position was handled (written, or parked) before
  a restart read it again: it is dropped, never parked twice;
- a truncate is never held by key.

The map is loaded from the state store (``dlq_parked_keys``) and kept current
by the writer (:meth:`mark` on every park). A replay or discard, maybe in
another process, bumps a generation counter in the state store;
:meth:`refresh` looks at it at most once every ``recheck`` seconds and reloads
when it moved, so keys that left the queue stop holding events back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tidesync.event import ChangeEvent, Key, Position

if TYPE_CHECKING:
    from tidesync.clock import Clock
    from tidesync.state.store import StateStore

GENERATION_NS = "dlq_generation"  # kv namespace: per pipeline, bumped by every replay and discard

Wait = Literal["blocked", "handled"] | None


class ParkedKeys:
    """The newest parked position per (entity, key) of one pipeline's sink; see the module docstring.

    Without a state store it is an in-memory map (a repair run fills it itself).
    """

    __slots__ = ("_checked", "_generation", "clock", "newest", "pipeline", "recheck", "sink", "state")

    def __init__(
        self,
        pipeline: str,
        sink: str,
        state: StateStore | None = None,
        clock: Clock | None = None,
        *,
        recheck: float = 1.0,
    ) -> None:
        self.pipeline = pipeline
        self.sink = sink
        self.state = state
        self.clock = clock
        self.recheck = recheck
        self.newest: dict[tuple[str, Key], Position] = {}
        self._generation: object = None
        self._checked = float("-inf")

    def __bool__(self) -> bool:
        return bool(self.newest)

    def __len__(self) -> int:
        return len(self.newest)

    async def load(self) -> None:
        """Read the parked keys (and the generation they belong to) from the state store."""
        if self.state is None:
            return
        self._generation = await self.state.kv_get(GENERATION_NS, self.pipeline)
        if self.clock is not None:
            self._checked = self.clock.monotonic()
        self.newest = await self.state.dlq_parked_keys(self.pipeline, self.sink)

    async def refresh(self) -> None:
        """Reload when a replay or discard changed the queue; at most one look every ``recheck`` seconds."""
        if self.state is None or self.clock is None:
            return
        now = self.clock.monotonic()
        if now - self._checked < self.recheck:
            return
        self._checked = now
        generation = await self.state.kv_get(GENERATION_NS, self.pipeline)
        if generation != self._generation:
            self._generation = generation
            self.newest = await self.state.dlq_parked_keys(self.pipeline, self.sink)

    def mark(self, event: ChangeEvent) -> None:
        """``event`` was parked: later events of its key wait behind it."""
        k = (event.entity, event.key)
        newest = self.newest.get(k)
        if newest is None or event.position > newest:
            self.newest[k] = event.position

    def behind(self, event: ChangeEvent) -> Wait:
        """ "blocked" (wait behind a dead letter of its key), "handled" (read again after a restart), or None."""
        if event.op == "truncate":
            return None
        newest = self.newest.get((event.entity, event.key))
        if newest is None:
            return None
        return "handled" if event.position and event.position <= newest else "blocked"
