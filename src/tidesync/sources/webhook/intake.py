"""The intake of one webhook source, independent of HTTP: verify, split, journal, answer.

:meth:`WebhookIntake.receive` decides the answer to one delivery:

======  ===================================================================
status  when
======  ===================================================================
200     accepted (journaled before this answer) or a duplicate, or ignored
        (a type not subscribed, or an event older than ``max_age``)
400     the body is not a delivery of this provider (short reason), or it is
        nested deeper, wider or larger in values than the source's limits
        (:mod:`~tidesync.sources.webhook.limits`: checked before journaling),
        or ``max_age`` is set and an event has no timestamp to check it by
401     missing or bad signature (a malformed signed timestamp too), or a
        timestamp outside the tolerance
413     larger than the limit (the HTTP layer checks while reading)
415     not JSON
503     the journal cannot be written now (the sender retries later)
======  ===================================================================

No answer shows internals: reasons are fixed short texts, and an unexpected
error while splitting is answered 400 and logged, never 5xx. Every rejection
is counted in ``tidesync_webhook_rejections_total{source, reason}``.

``max_age`` (github, generic: senders that sign no timestamp, so a captured
body stays validly signed forever): an event whose own timestamp is older is
answered 200, not journaled, and counted as
``tidesync_webhook_accepted_total{outcome="too_old"}`` (``"too_old": n`` in the
answer). Not a 4xx, because a retry can never succeed (the event only gets
older) and a sender retries a 4xx for days and then disables the endpoint,
which would stop its good deliveries too.

Secrets are read through :class:`~tidesync.secrets.Secret` at most once a
second (a rotated file or variable takes effect within a second, without a
file read per request).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, StateStoreError
from tidesync.observe.metrics import WEBHOOK_ACCEPTED, WEBHOOK_REJECTIONS
from tidesync.sources.webhook.config import WebhookSourceConfig
from tidesync.sources.webhook.github import GitHubProvider
from tidesync.sources.webhook.hubspot import HubSpotProvider
from tidesync.sources.webhook.journal import JournalWriter
from tidesync.sources.webhook.limits import ShapeError, ShapeLimits
from tidesync.sources.webhook.provider import Malformed, Provider, RawRequest, parse_json
from tidesync.sources.webhook.signatures import SignatureError
from tidesync.sources.webhook.stripe import StripeProvider
from tidesync.state.store import JournalAppend

log = logging.getLogger("tidesync.webhook")

DEFAULT_MAX_BODY = 1024 * 1024
_SECRET_TTL = 1.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def build_provider(config: WebhookSourceConfig) -> Provider:
    if config.provider == "stripe":
        return StripeProvider(config.tolerance)
    if config.provider == "hubspot":
        return HubSpotProvider(config.tolerance)
    if config.provider == "github":
        return GitHubProvider(config.github.events)
    from tidesync.sources.webhook.generic import GenericProvider

    assert config.signature is not None and config.mapping is not None
    return GenericProvider(config.signature, config.mapping, config.tolerance)


def reject(source: str, status: int, reason: str, message: str) -> Reply:
    WEBHOOK_REJECTIONS.labels(source, reason).inc()
    return Reply(status, {"error": message})


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class WebhookIntake:
    """Receives deliveries for the route ``/webhooks/<name>`` and journals them through ``journal``.

    ``wake`` is set after every append, so the source reading the journal in
    the same process wakes at once instead of at its next poll.
    """

    def __init__(
        self,
        config: WebhookSourceConfig,
        name: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        journal: JournalWriter | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.clock = clock
        self.provider = build_provider(config)
        self.journal = journal
        self.wake = asyncio.Event()
        self.max_body_bytes = config.max_body_bytes or DEFAULT_MAX_BODY
        self.public_url = config.public_url
        self.limits = ShapeLimits(config.max_depth, config.max_width, config.max_values)
        self._secrets: list[str] = []
        self._secrets_read = float("-inf")
        if config.provider == "hubspot" and not config.public_url:
            log.info("webhook source %s: HubSpot signs the URL it calls; set public_url when behind a proxy", name)

    def secrets(self) -> list[str]:
        now = self.clock.monotonic()
        if now - self._secrets_read >= _SECRET_TTL:
            try:
                self._secrets = self.config.secrets.values()
            except ConfigError as exc:  # a secret file being rotated: keep the last good values
                log.warning("webhook source %s: cannot read its secrets: %s", self.name, exc)
            self._secrets_read = now
        return self._secrets

    async def receive(self, request: RawRequest) -> Reply:
        name = self.name
        if not _is_json(request.headers.get("content-type")):
            return reject(name, 415, "content_type", "content type must be application/json")
        if len(request.body) > self.max_body_bytes:
            return reject(name, 413, "too_large", "body too large")
        try:
            self.provider.verify(request, self.secrets(), self.clock.time())
        except SignatureError as exc:
            return reject(name, 401, exc.reason, str(exc))
        try:
            doc = parse_json(request.body)
            # Before split and journal: a body past the limits never reaches a recursive walk.
            self.limits.check(doc)
            deliveries, ignored = self.provider.split(replace(request, parsed=doc))
        except ShapeError as exc:
            return reject(name, 400, exc.reason, str(exc))
        except Malformed as exc:
            return reject(name, 400, "malformed", str(exc))
        except Exception:  # a bug in a provider must still not become a 5xx for a sender's bad input
            log.exception("webhook source %s: unexpected error reading a delivery", name)
            return reject(name, 400, "malformed", "body cannot be read")
        if ignored:
            WEBHOOK_ACCEPTED.labels(name, "ignored").inc(ignored)
        too_old = 0
        max_age = self.config.max_age
        if max_age is not None and deliveries:
            if any(d.at is None for d in deliveries):
                return reject(name, 400, "no_timestamp", "an event has no timestamp to check max_age by")
            oldest = self.clock.time() - max_age
            fresh = [d for d in deliveries if d.at is not None and d.at >= oldest]
            too_old, deliveries = len(deliveries) - len(fresh), fresh
            if too_old:
                WEBHOOK_ACCEPTED.labels(name, "too_old").inc(too_old)
        if not deliveries:
            reply = {"accepted": 0, "duplicates": 0, "ignored": ignored}
            return Reply(200, {**reply, "too_old": too_old} if too_old else reply)
        if self.journal is None:
            return Reply(503, {"error": "not ready, retry later"})
        now = self.clock.time()
        entries = [JournalAppend(name, d.event_id, d.body, d.meta, now) for d in deliveries]
        try:
            seqs = await self.journal.append(entries)
        except StateStoreError as exc:
            log.error("webhook source %s: cannot journal a delivery: %s", name, exc)
            return Reply(503, {"error": "cannot store the delivery now, retry later"})
        accepted = sum(1 for s in seqs if s is not None)
        duplicates = len(seqs) - accepted
        if accepted:
            WEBHOOK_ACCEPTED.labels(name, "journaled").inc(accepted)
            self.wake.set()
        if duplicates:
            WEBHOOK_ACCEPTED.labels(name, "duplicate").inc(duplicates)
        reply = {"accepted": accepted, "duplicates": duplicates, "ignored": ignored}
        return Reply(200, {**reply, "too_old": too_old} if too_old else reply)
