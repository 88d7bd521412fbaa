"""Configuration of a webhook sink.

::

    sink:
      type: webhook
      url: https://example.com/hooks/tidesync
      secrets: ["${env:HOOK_SECRET}"]     # whsec_...; several sign together during a rotation
      batch_size: 1                       # events per POST (1: one event per POST)
      concurrency: 4                      # POSTs in flight at once
      per_key_order: true                 # one key's events never in flight together
      timeout: 15
      retry: {initial_delay: 5, max_delay: 3600, multiplier: 2, jitter: full}
      disable_after: 432000               # seconds of continuous failure before the endpoint is disabled
      format: tidesync                    # tidesync | debezium | cloudevents: what each body holds

``format`` (see :mod:`tidesync.formats`): ``tidesync``, the default, POSTs the envelope of
:mod:`.envelope`; ``debezium`` and ``cloudevents`` POST the formatted event itself as the body, with
no envelope around it (a batch is a JSON array of them). The Standard Webhooks headers are the same
in every format: ``webhook-id`` is the event's idempotency id (a cloudevent's ``id`` is that id too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tidesync.formats import SinkFormat
from tidesync.secrets import Secret
from tidesync.sources.webhook.signatures import check_standard_secrets


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeliveryRetry(_Strict):
    """The schedule of one event's attempts: exponential backoff with jitter, persisted across restarts."""

    initial_delay: float = Field(5.0, gt=0, description="seconds before an event's second attempt")
    max_delay: float = Field(3600.0, gt=0, description="longest wait between attempts")
    multiplier: float = Field(2.0, ge=1, description="each wait's cap is the previous one's times this")
    jitter: Literal["full", "none"] = Field("full", description="full: a random wait up to the cap; none: the cap")


class WebhookSinkConfig(_Strict):
    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="the endpoint events are POSTed to")
    secrets: Secret = Field(description="Standard Webhooks secrets (whsec_ + base64)")
    batch_size: int = Field(1, ge=1, le=1000, description="events per POST")
    concurrency: int = Field(4, ge=1, le=256, description="POSTs in flight at once")
    per_key_order: bool = Field(True, description="never two events of one key in flight at once")
    timeout: float = Field(15.0, gt=0, description="seconds for one POST")
    retry: DeliveryRetry = Field(default_factory=lambda: DeliveryRetry.model_validate({}))
    disable_after: float = Field(5 * 86400.0, gt=0, description="continuous failure (s) that disables the endpoint")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    format: SinkFormat = Field(
        "tidesync",
        description="what a body holds: tidesync (the envelope), or debezium | cloudevents (the event in that "
        "format, no envelope; a batch is a JSON array)",
    )

    @field_validator("secrets")
    @classmethod
    def _standard(cls, value: Secret) -> Secret:
        check_standard_secrets(
            value.values(),
            'generate one with: python -c "import base64,os;'
            " print('whsec_'+base64.b64encode(os.urandom(32)).decode())\"",
        )
        return value
