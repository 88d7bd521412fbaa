"""Delivery as webhooks: events POSTed as signed Standard Webhooks, retried on a persisted schedule."""

from tidesync.sinks.webhook.attempts import enable_endpoint, endpoint_status
from tidesync.sinks.webhook.config import WebhookSinkConfig
from tidesync.sinks.webhook.sink import WebhookSink

__all__ = ["WebhookSink", "WebhookSinkConfig", "enable_endpoint", "endpoint_status"]
