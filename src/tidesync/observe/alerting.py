"""Evaluating alert rules on a timer, and telling people: the log, and optionally a signed webhook.

:class:`AlertBook` holds one :class:`~tidesync.observe.alerts.Alert` per (rule,
pipeline) and turns sampled values into notices. :class:`LogNotifier` logs a
fire as a warning (so it also shows in the recent errors) and a clear as info.
:class:`WebhookNotifier` POSTs each notice through the webhook sink itself
(Standard Webhooks signature, the sink's classification of answers, its
persisted retry schedule), one at a time in the order they happened, from a
queue of its own so a slow receiver never delays evaluation. The body is the
sink's envelope: ``type`` is ``tidesync.alert.fired`` or
``tidesync.alert.cleared`` and ``data.after`` holds the notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.retrying import RetriesExhausted, RetryingWriter
from tidesync.errors import DeliveryError
from tidesync.event import ChangeEvent
from tidesync.observe.alerts import FIRED, Alert, Notice, Threshold
from tidesync.observe.alerts_config import AlertRuleConfig, AlertWebhookConfig
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.alerts")
ALERT_ENTITY = "tidesync.alert"
ALERT_PIPELINE = "_alerts"  # the name the notifier's sink state is kept under

Sampler = Callable[[AlertRuleConfig, str, float], float | None]  # (rule, pipeline, now) -> value


class AlertBook:
    def __init__(self, rules: Sequence[AlertRuleConfig], pipelines: Sequence[str]) -> None:
        self.entries: list[tuple[AlertRuleConfig, Alert]] = []
        for rule in rules:
            threshold = Threshold(rule.above, rule.clear_threshold, rule.for_seconds)
            for p in rule.pipelines or pipelines:
                if p in pipelines:
                    self.entries.append((rule, Alert(rule.name, p, rule.metric, threshold)))

    def evaluate(self, sample: Sampler, now: float) -> list[Notice]:
        notices = []
        for rule, alert in self.entries:
            try:
                value = sample(rule, alert.pipeline, now)
            except Exception as exc:  # one unreadable value must not stop the other alerts
                log.warning("alert %s: cannot read %s of %s: %s", rule.name, rule.metric, alert.pipeline, exc)
                continue
            notice = alert.step(value, now)
            if notice is not None:
                notices.append(notice)
        return notices

    @property
    def alerts(self) -> list[Alert]:
        return [a for _, a in self.entries]


class Notifier(Protocol):
    async def start(self) -> None: ...

    def notify(self, notice: Notice) -> None: ...

    async def close(self) -> None: ...


class LogNotifier:
    async def start(self) -> None:
        return None

    def notify(self, notice: Notice) -> None:
        log.log(logging.WARNING if notice.kind == FIRED else logging.INFO, "%s", notice.message)

    async def close(self) -> None:
        return None


def notice_event(notice: Notice, seq: int) -> ChangeEvent:
    """The notice as the event the webhook sink sends (its id is stable across retries of this notice)."""
    body: dict[str, Any] = {**asdict(notice), "message": notice.message}
    return ChangeEvent(
        entity=ALERT_ENTITY,
        key=(notice.rule, notice.pipeline),
        op=notice.kind,
        after=body,
        position=(round(notice.at * 1000), seq),
        committed_at=notice.at,
    )


class WebhookNotifier:
    """Sends notices through a :class:`~tidesync.sinks.webhook.WebhookSink`; gives one up after ``give_up_after``."""

    def __init__(
        self,
        config: AlertWebhookConfig,
        state: StateStore,
        *,
        clock: Clock = SYSTEM_CLOCK,
        transport: httpx.AsyncBaseTransport | None = None,
        capacity: int = 1000,
    ) -> None:
        from tidesync.sinks.webhook import WebhookSink, WebhookSinkConfig

        self.config = config
        self.state = state
        self.clock = clock
        sink_config = WebhookSinkConfig.model_validate(
            {
                "url": config.url,
                "secrets": config.secrets,
                "batch_size": 1,
                "concurrency": 1,
                "timeout": config.timeout,
                "headers": config.headers,
                "retry": {"initial_delay": 0.5, "max_delay": 60.0},
                "disable_after": 10 * 365 * 86400.0,  # an alert receiver is never switched off for failing
            }
        )
        self.sink = WebhookSink(sink_config, transport=transport)
        self.writer = RetryingWriter(
            self.sink, RetryPolicy(initial_delay=0.5, max_delay=60.0, max_age=config.give_up_after), clock
        )
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=capacity)
        self.sent = 0
        self.failed = 0
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sink.open(Context(pipeline=ALERT_PIPELINE, name="webhook", state=self.state, clock=self.clock))
        self._task = asyncio.create_task(self._deliver(), name="tidesync-alert-webhook")

    def notify(self, notice: Notice) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.failed += 1
            log.error("alert webhook: %d notices waiting; dropped: %s", self.queue.qsize(), notice.message)

    async def _deliver(self) -> None:
        while True:
            notice = await self.queue.get()
            self._seq += 1
            try:
                await self.writer.write([notice_event(notice, self._seq)])
                self.sent += 1
            except (DeliveryError, RetriesExhausted) as exc:
                self.failed += 1
                log.error("alert webhook: gave up sending %r: %s", notice.message, exc)
            finally:
                self.queue.task_done()

    async def close(self, grace: float = 5.0) -> None:
        """Give queued notices up to ``grace`` seconds to go out, then stop."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sink.close()
