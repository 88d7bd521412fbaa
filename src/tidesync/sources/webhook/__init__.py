"""Webhook intake as a source: signed deliveries are journaled before the 2xx, then read, mapped and applied.

Modules: ``signatures`` (pure verifiers per scheme), ``provider`` and one
module per sender (``stripe``, ``hubspot``, ``github``, ``generic``: split a
delivery, map it to changes), ``intake`` (the answer to one HTTP delivery),
``journal`` (group commit), ``source`` (reads the journal), ``ordering``
(older versions never overwrite newer ones), backfill through the Events API client shared with the
Stripe polling source (:mod:`tidesync.sources.http.stripe_api`).
"""

from tidesync.sources.webhook.config import WebhookSourceConfig
from tidesync.sources.webhook.intake import WebhookIntake
from tidesync.sources.webhook.source import WebhookSource

__all__ = ["WebhookIntake", "WebhookSource", "WebhookSourceConfig"]
