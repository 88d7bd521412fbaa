"""The webhook sink: POSTs events as signed Standard Webhooks, with retries that survive restarts.

Outcome of one POST
- 2xx: written.
- 429, 408, 5xx, a timeout or a lost connection: transient. The next attempt
  of those events is due after the configured backoff (or ``Retry-After``,
  whichever is later); the schedule is stored, so a restart continues it.
- 410 Gone: the endpoint is disabled (permanent error naming it); every later
  write fails fast, and the events go to the dead-letter queue, until it is
  re-enabled (``tidesync webhook enable``, or another URL in the config).
- 401 and 403: systemic (the endpoint refuses this sender, so it would refuse
  every event): the engine holds the events and blocks the pipeline until the
  endpoint accepts again. Like a transient failure, the lane sends nothing
  more in that write; it does not count towards ``disable_after``.
- 3xx and other 4xx: permanent, with the status and a body excerpt in the error.
- Failing without a single success for ``disable_after`` seconds disables the
  endpoint as well, logs an error once and sets :attr:`WebhookSink.alert`.

Concurrency and order: events go out through ``concurrency`` lanes, each
sending its events in order, one POST at a time. After a transient failure a
lane sends nothing more in that write (the failed POST was the probe), so an
outage costs one attempt per lane per retry, not one per event. With ``per_key_order`` a
key's events always take the same lane, so two events of one key are never in
flight together; and an event that follows a failed event of its key is not
sent but reported failed too (transiently behind a transient failure, as
``blocked`` behind a permanent one), as the sink contract requires.

The engine retries transient failures by its own policy; this sink waits, in
``write``, until the stored due time of the events it is asked to send, so the
gaps between attempts follow this sink's schedule whenever it is the longer.
Dead-letter replays (``replay=True``) do not wait.

Body format (``format``, :mod:`tidesync.formats`): ``tidesync`` POSTs :func:`.envelope.envelope`;
``debezium`` and ``cloudevents`` POST the formatted event alone (a batch: a JSON array of them,
``application/cloudevents-batch+json`` for cloudevents). An event the format cannot carry fails
alone, permanently, before any lane sends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    StateStoreError,
    SystemicError,
    TransientError,
)
from tidesync.event import ChangeEvent, Key
from tidesync.formats import FormatError, content_type, encoder
from tidesync.observe.metrics import WEBHOOK_DELIVERY_ATTEMPTS, WEBHOOK_ENDPOINT_DISABLED
from tidesync.protocols import Context
from tidesync.retry import RetryPolicy
from tidesync.secrets import REDACTOR
from tidesync.sinks.blocked import behind
from tidesync.sinks.webhook.attempts import ENDPOINT_NS, Endpoint, RetryBook, parse_retry_after
from tidesync.sinks.webhook.config import WebhookSinkConfig
from tidesync.sinks.webhook.envelope import body_of, envelope, idempotency_id, standard_headers
from tidesync.state.store import StateChanges

log = logging.getLogger("tidesync.webhook")
_RECHECK = 1.0  # seconds between looks at the stored endpoint record while disabled


@dataclass(slots=True)
class _Item:
    index: int
    event: ChangeEvent
    msg_id: str
    envelope: bytes  # the event as it is POSTed, encoded once per write

    @property
    def key(self) -> tuple[str, Key]:
        return (self.event.entity, self.event.key)


class WebhookSink:
    def __init__(self, config: WebhookSinkConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport
        self.clock: Clock = SYSTEM_CLOCK
        self.pipeline = ""
        self.name = "sink"
        self.client: httpx.AsyncClient | None = None
        self.book = RetryBook(self._policy(), "")
        self.endpoint = Endpoint(config.url)
        self._endpoint_dirty = False
        self._checked = float("-inf")
        self._ctx: Context | None = None
        self.rng = random.Random()
        self._format: Callable[[ChangeEvent], bytes] | None = None  # None: the tidesync envelope

    def _policy(self) -> RetryPolicy:
        r = self.config.retry
        return RetryPolicy(r.initial_delay, r.max_delay, r.multiplier, r.jitter)

    @property
    def alert(self) -> bool:
        """True once the endpoint was disabled for failing too long (for the alerting code to read)."""
        return self.endpoint.alert

    @property
    def disabled(self) -> bool:
        return self.endpoint.disabled is not None

    @property
    def _endpoint_key(self) -> str:
        return f"{self.pipeline}:{self.name}"

    async def open(self, ctx: Context) -> None:
        self._ctx, self.clock, self.pipeline, self.name = ctx, ctx.clock, ctx.pipeline, ctx.name
        self.book = RetryBook(self._policy(), f"{ctx.pipeline}:{ctx.name}:", self.rng)
        fmt = self.config.format
        self._format = None if fmt == "tidesync" else encoder(fmt, pipeline=ctx.pipeline, sink=ctx.name)
        await self.book.load(ctx.state)
        await self._reload_endpoint()
        if self.client is None:
            n = self.config.concurrency
            self.client = httpx.AsyncClient(
                timeout=self.config.timeout,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                follow_redirects=False,
                transport=self.transport,
                headers={"user-agent": "tidesync-webhooks/1", **self.config.headers},
            )

    async def _reload_endpoint(self) -> None:
        assert self._ctx is not None
        self.endpoint = Endpoint.from_value(
            self.config.url, await self._ctx.state.kv_get(ENDPOINT_NS, self._endpoint_key)
        )
        self._checked = self.clock.monotonic()
        WEBHOOK_ENDPOINT_DISABLED.labels(self.pipeline, self.name).set(1 if self.disabled else 0)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    # --- write ------------------------------------------------------------------------------

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        if not events:
            return
        assert self._ctx is not None and self.client is not None, "open() first"
        if self.disabled and self.clock.monotonic() - self._checked >= _RECHECK:
            await self._reload_endpoint()
        failures: dict[int, DeliveryError] = {}
        if self.disabled:
            err = self._disabled_error()
            raise PartialBatchError(dict.fromkeys(range(len(events)), err))
        items = []
        for i, e in enumerate(events):
            msg_id = idempotency_id(self.pipeline, self.name, e)
            try:  # an event JSON cannot carry fails alone, before any lane sends it
                body = envelope(e, msg_id) if self._format is None else self._format(e)
            except FormatError as exc:
                failures[i] = exc
                continue
            except (TypeError, ValueError, OverflowError) as exc:
                failures[i] = PermanentError(f"the event cannot be sent as JSON: {type(exc).__name__}: {exc}")
                continue
            items.append(_Item(i, e, msg_id, body))
        lanes: dict[int, list[_Item]] = {}
        n = self.config.concurrency
        for item in items:
            lane = hash(item.key) % n if self.config.per_key_order else item.index % n
            lanes.setdefault(lane, []).append(item)
        try:
            await asyncio.gather(*(self._run_lane(lane, failures, replay) for lane in lanes.values()))
        finally:
            await self._store()
        if failures:
            raise PartialBatchError(failures)

    async def _run_lane(self, lane: list[_Item], failures: dict[int, DeliveryError], replay: bool) -> None:
        blocked: dict[tuple[str, Key], DeliveryError] = {}
        size = self.config.batch_size
        down: DeliveryError | None = None
        for start in range(0, len(lane), size):
            send: list[_Item] = []
            for item in lane[start : start + size]:
                earlier = blocked.get(item.key) if self.config.per_key_order else None
                if earlier is not None:
                    failures[item.index] = behind(earlier, refusing="the endpoint refuses")
                elif isinstance(down, SystemicError):
                    failures[item.index] = SystemicError(f"not sent while the endpoint refuses ({down})")
                elif down is not None:
                    # One failing POST probes for the lane: the rest are not sent (nor scheduled) this round.
                    failures[item.index] = TransientError(f"not sent while the endpoint fails ({down})")
                else:
                    send.append(item)
            if not send:
                continue
            if self.disabled:
                for item in send:
                    failures[item.index] = self._disabled_error()
                continue
            due = max(self.book.due(item.msg_id) for item in send)
            wait = due - self.clock.time()
            if wait > 0 and not replay:
                await self.clock.sleep(wait)
            error, retry_after = await self._post(send)
            now = self.clock.time()
            if error is None:
                for item in send:
                    self.book.done(item.msg_id)
                self._succeeded()
                continue
            for item in send:
                failures[item.index] = error
                blocked[item.key] = error
                if error.transient:
                    self.book.failed(item.msg_id, now, retry_after)
                else:
                    self.book.done(item.msg_id)
            if error.transient or isinstance(error, SystemicError):
                down = error
            if not isinstance(error, SystemicError):  # a refusal blocks the pipeline; it never disables the endpoint
                self._failed(now)

    async def _post(self, items: list[_Item]) -> tuple[DeliveryError | None, float]:
        assert self.client is not None
        batched = self.config.batch_size > 1
        envelopes, ids = [i.envelope for i in items], [i.msg_id for i in items]
        enveloped = self._format is None
        msg_id, body = body_of(envelopes, ids, batched, items[-1].event.committed_at, enveloped=enveloped)
        fmt = self.config.format
        # CloudEvents' JSON batch format: an array of structured events, with a media type of its own
        ctype = "application/cloudevents-batch+json" if batched and fmt == "cloudevents" else content_type(fmt)
        headers = standard_headers(msg_id, int(self.clock.time()), body, self.config.secrets.values(), ctype)
        url = self.config.url
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "transient").inc()
            return TransientError(f"{url}: no answer within {self.config.timeout:g}s ({type(exc).__name__})"), 0.0
        except httpx.HTTPError as exc:
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "transient").inc()
            return TransientError(f"{url}: {type(exc).__name__}: {exc}"), 0.0
        status = response.status_code
        if 200 <= status < 300:
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "ok").inc()
            return None, 0.0
        excerpt = REDACTOR.redact(response.text[:300].strip())
        if status == 410:
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "gone").inc()
            self._disable(f"{url} answered 410 Gone", alert=False)
            return self._disabled_error(), 0.0
        if status in (408, 429) or status >= 500:
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "transient").inc()
            retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
            return TransientError(f"{url} answered {status}: {excerpt}"), retry_after
        if status in (401, 403):
            WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "refused").inc()
            return SystemicError(
                f"{url} answered {status}: the endpoint refuses this sender; check the secrets and headers "
                f"it expects: {excerpt}"
            ), 0.0
        WEBHOOK_DELIVERY_ATTEMPTS.labels(self.pipeline, "permanent").inc()
        why = "redirects are not followed; " if 300 <= status < 400 else ""
        return PermanentError(f"{url} answered {status}: {why}{excerpt}"), 0.0

    # --- endpoint health --------------------------------------------------------------------------

    def _disabled_error(self) -> PermanentError:
        return PermanentError(
            f"webhook endpoint disabled ({self.endpoint.disabled}); re-enable it with "
            f"`tidesync webhook enable CONFIG --pipeline {self.pipeline}` or change its url"
        )

    def _succeeded(self) -> None:
        if self.endpoint.failing_since is not None:
            self.endpoint.failing_since = None
            self._endpoint_dirty = True

    def _failed(self, now: float) -> None:
        ep = self.endpoint
        if ep.failing_since is None:
            ep.failing_since = now
            self._endpoint_dirty = True
        elif now - ep.failing_since >= self.config.disable_after and not self.disabled:
            self._disable(f"failing for {now - ep.failing_since:.0f}s without a success", alert=True)

    def _disable(self, why: str, *, alert: bool) -> None:
        if self.disabled:
            return
        self.endpoint.disabled, self.endpoint.disabled_at, self.endpoint.alert = why, self.clock.time(), alert
        self._endpoint_dirty = True
        WEBHOOK_ENDPOINT_DISABLED.labels(self.pipeline, self.name).set(1)
        log.error("pipeline %s: webhook endpoint disabled: %s", self.pipeline, REDACTOR.redact(why))

    async def _store(self) -> None:
        """One transaction for the attempts and the endpoint record; on failure keep them for the next write."""
        assert self._ctx is not None
        changes = StateChanges()
        self.book.take_changes(changes)
        if self._endpoint_dirty:
            ep = self.endpoint
            changes.kv_put[(ENDPOINT_NS, self._endpoint_key)] = {
                "url": ep.url, "failing_since": ep.failing_since, "disabled": ep.disabled,
                "disabled_at": ep.disabled_at, "alert": ep.alert,
            }  # fmt: skip
        if changes.is_empty():
            return
        try:
            await self._ctx.state.commit(self.pipeline, changes)
            self._endpoint_dirty = False
        except StateStoreError as exc:
            self.book.restore_changes(changes)
            log.warning("pipeline %s: cannot store webhook retry state: %s", self.pipeline, exc)
