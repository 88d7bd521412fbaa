"""What the HTTP app serves from: the running process's webhook intakes, API settings, engine and monitor.

The admin routes read the engine, the state store, the config and the monitor
from it; the webhook routes only need ``intakes``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tidesync.sources.webhook.intake import WebhookIntake
from tidesync.sources.webhook.journal import JournalWriter
from tidesync.state.store import StateStore


@dataclass
class ApiRuntime:
    """``intakes`` maps a route name to its intake; ``journal`` writes for all of them (group commit).

    ``public_url`` is how senders reach this server (``https://hooks.example.com``);
    an intake's own ``public_url`` wins. ``max_body_bytes`` is the webhook routes' default
    size limit; ``admin_max_body_bytes`` that of every other route (see ``api/guard.py``).
    """

    intakes: dict[str, WebhookIntake] = field(default_factory=dict)
    state: StateStore | None = None
    journal: JournalWriter | None = None
    public_url: str | None = None
    max_body_bytes: int = 1024 * 1024
    admin_max_body_bytes: int = 64 * 1024
    engine: Any = None
    token: Any = None  # a tidesync.secrets.Secret for the admin routes, or None
    config: Any = None  # the LoadedConfig (admin: syncs, replay and reconcile of stopped pipelines)
    monitor: Any = None  # a tidesync.observe.monitor.Monitor (admin: /metrics, alerts, readings)
    metrics_public: bool = False  # serve /metrics without the token

    @property
    def store(self) -> StateStore:
        """The state store the routes read and write: the one bound here, else the running engine's.

        Raises ``RuntimeError`` when there is neither (a server built without a state store).
        """
        if self.state is not None:
            return self.state
        engine_state: StateStore | None = getattr(self.engine, "state", None)
        if engine_state is None:
            raise RuntimeError("the API has no state store")
        return engine_state

    def now(self) -> float:
        """Seconds since the epoch on the monitor's clock (a fake one in tests), else the wall clock."""
        if self.monitor is not None:
            return float(self.monitor.clock.time())
        return time.time()

    def add_intake(self, intake: WebhookIntake) -> None:
        if intake.name in self.intakes and self.intakes[intake.name] is not intake:
            raise ValueError(f"two webhook sources use the route name {intake.name!r}")
        self.intakes[intake.name] = intake
        if intake.config.max_body_bytes is None:
            intake.max_body_bytes = self.max_body_bytes
        if self.journal is not None:
            intake.journal = self.journal

    def bind(self, state: StateStore) -> None:
        """Journal through ``state`` (opened by the caller) from now on."""
        self.state = state
        self.journal = JournalWriter(state)
        for intake in self.intakes.values():
            intake.journal = self.journal
