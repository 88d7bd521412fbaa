"""Prometheus metrics, registered in one module-level registry that the ``/metrics`` endpoint exports.

Minimal for now: webhook intake and delivery counters. Label values are
bounded: ``source`` is a configured webhook source name (an unknown one is
counted as ``_unknown``, never as the name a client sent), ``reason`` is one of
a fixed set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOK_REJECTIONS = Counter(
    "tidesync_webhook_rejections_total",
    "Webhook deliveries answered with a 4xx, by source and reason.",
    ["source", "reason"],
    registry=REGISTRY,
)
WEBHOOK_ACCEPTED = Counter(
    "tidesync_webhook_accepted_total",
    "Webhook events acknowledged with a 2xx: journaled, duplicate or ignored (a type not subscribed).",
    ["source", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_STALE = Counter(
    "tidesync_webhook_stale_events_total",
    "Webhook events dropped because a newer version of the same record was already applied.",
    ["source"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERY_ATTEMPTS = Counter(
    "tidesync_webhook_delivery_attempts_total",
    "Outgoing webhook POSTs, by pipeline and outcome (ok, transient, refused, permanent, gone).",
    ["pipeline", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_ENDPOINT_DISABLED = Gauge(
    "tidesync_webhook_endpoint_disabled",
    "1 while a webhook sink's endpoint is disabled (410 Gone or failing for too long).",
    ["pipeline", "sink"],
    registry=REGISTRY,
)
MISSED_BY_PRIMARY = Counter(
    "tidesync_missed_by_primary_total",
    "Changes of a hybrid pipeline that only its fallback poller saw: the primary (webhooks, CDC) dropped them.",
    ["pipeline", "entity"],
    registry=REGISTRY,
)
