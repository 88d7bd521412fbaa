"""Configuration of a webhook source: which sender, its secrets, and (generic) how to map its payloads.

::

    source:
      type: webhook
      provider: stripe                    # stripe | hubspot | github | generic
      name: billing                       # route: POST /webhooks/billing (default: the pipeline name)
      secrets: ["${env:STRIPE_WHSEC}", "${env:STRIPE_WHSEC_OLD}"]   # several during a rotation
      stripe: {api_key: "${env:STRIPE_KEY}", backfill: true}

A generic source names its signature scheme and JSON paths::

      provider: generic
      signature: {scheme: hmac-sha256, header: X-Signature, encoding: hex, prefix: "sha256="}
      mapping: {event_id: id, entity: orders, key: [data.id], op: action,
                ops: {created: insert, updated: update, removed: delete},
                after: data, changed: changed_fields, timestamp: occurred_at, timestamp_unit: ms,
                version: data.revision}
      ordering: true                      # needs mapping.version or mapping.timestamp

Replays: a delivery is de-duplicated by an id its signature covers, never by
an unsigned header. Generic ``hmac-sha256`` signs only the body, so its id is
``mapping.event_id`` (a path in the body) or, with ``event_id_hash: true``, the
SHA-256 of the body; ``event_id_header`` is refused unless it is ``webhook-id``
of Standard Webhooks (signed with the timestamp). GitHub's id is a hash of the
body and its events are ordered by ``updated_at``. ``max_age`` bounds the age
of an event's own timestamp for senders that sign none (github, generic).

Every provider refuses (400, nothing journaled) a body nested deeper than
``max_depth`` (default 64), with more than ``max_width`` keys in one object or
items in one array (default 10,000), or more than ``max_values`` values in all
(default 200,000).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tidesync.event import MAX_DEPTH
from tidesync.secrets import Secret
from tidesync.sources.webhook.limits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_VALUES, DEFAULT_MAX_WIDTH
from tidesync.sources.webhook.paths import compile_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_path(value: str | None) -> str | None:
    if value is not None:
        compile_path(value)
    return value


class StripeOptions(_Strict):
    """Backfill from Stripe's Events API after downtime (needs an API key that may read events)."""

    api_key: Secret | None = Field(None, description="a key that may read events; without it there is no backfill")
    base_url: str = Field("https://api.stripe.com", description="the API's address (a local server in tests)")
    backfill: bool = Field(True, description="at start, fetch events created since the newest one applied")
    overlap: float = Field(300.0, ge=0, description="seconds to look back before the newest applied event")
    backfill_every: float | None = Field(None, gt=0, description="also backfill this often (seconds)")
    timeout: float = Field(30.0, gt=0, description="seconds for one request")


class GitHubOptions(_Strict):
    """Which GitHub deliveries become events."""

    events: list[str] = Field(
        default_factory=lambda: ["issues", "pull_request"], description="X-GitHub-Event names to accept"
    )


class SignatureOptions(_Strict):
    """How a generic sender signs: an HMAC-SHA256 header, or Standard Webhooks."""

    scheme: Literal["hmac-sha256", "standard-webhooks"] = Field(
        "hmac-sha256", description="an HMAC-SHA256 of the body in a header, or Standard Webhooks (webhook-* headers)"
    )
    header: str = Field("X-Signature", description="hmac-sha256: the header holding the signature")
    encoding: Literal["hex", "base64"] = Field("hex", description="hmac-sha256: how the signature is written")
    prefix: str = Field("", description="hmac-sha256: text before the signature, e.g. sha256=")


Op = Literal["insert", "update", "delete", "snapshot"]


class GenericMapping(_Strict):
    """JSON paths into a delivery (see :mod:`tidesync.sources.webhook.paths`)."""

    events: str | None = Field(None, description="path to a list of events; default: the body is one event")
    event_id: str | None = Field(None, description="path to the event id in the (signed) body")
    event_id_header: str | None = Field(
        None,
        description="standard-webhooks only: webhook-id, the signed header holding the message id "
        "(a header no signature covers could be changed to replay a body as a new event)",
    )
    event_id_hash: bool = Field(
        False,
        description="no id in the body: the SHA-256 of the signed body (of each event, with events) is the id, "
        "so identical bodies are one event",
    )
    entity: str | None = Field(None, description="a fixed entity name")
    entity_path: str | None = Field(None, description="path to the entity name (prefixed by entity_prefix)")
    entity_prefix: str = Field("", description="put before an entity read from entity_path")
    key: list[str] = Field(min_length=1, description="paths to the key fields, in order")
    op: str | None = Field(None, description="path to the operation; its value is looked up in ops")
    ops: dict[str, Op] = Field(default_factory=dict, description="value at `op` -> insert | update | delete | snapshot")
    default_op: Op = Field("update", description="the operation when `op` is absent or not in ops")
    after: str | None = Field("$", description="path to the record after the change")
    before: str | None = Field(None, description="path to the record before the change, where the sender has one")
    changed: str | None = Field(None, description="path to the changed field names (a list, or an object's keys)")
    timestamp: str | None = Field(None, description="path to when the change happened (commit time, latency)")
    timestamp_unit: Literal["s", "ms", "iso"] = Field("s", description="how the timestamp is written")
    version: str | None = Field(
        None,
        description="path to the record's version (a number, or an ISO 8601 timestamp) that ordering compares; "
        "default: the timestamp",
    )

    _paths = field_validator(
        "events", "event_id", "entity_path", "op", "after", "before", "changed", "timestamp", "version"
    )(_check_path)

    @field_validator("key")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for p in value:
            compile_path(p)
        return value

    @model_validator(mode="after")
    def _complete(self) -> GenericMapping:
        if (self.entity is None) == (self.entity_path is None):
            raise ValueError("give exactly one of entity (a fixed name) or entity_path")
        given = [n for n in ("event_id", "event_id_header") if getattr(self, n) is not None]
        if self.event_id_hash:
            given.append("event_id_hash")
        if not given:
            raise ValueError(
                "give event_id (a path to the id in the body), or event_id_hash: true: de-duplication needs an "
                "id per event"
            )
        if len(given) > 1:
            raise ValueError(f"give one of {' or '.join(given)}: each event has one id")
        return self


class WebhookSourceConfig(_Strict):
    type: Literal["webhook"] = "webhook"
    provider: Literal["stripe", "hubspot", "github", "generic"] = Field(
        description="who sends: its signature scheme and event shape"
    )
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="route name (default: the pipeline name)"
    )
    secrets: Secret = Field(description="signing secrets; several (a list) while rotating")
    tolerance: float = Field(300.0, gt=0, description="seconds a signed timestamp may differ from now")
    public_url: str | None = Field(
        None, description="the full URL senders call, when a proxy stands between (HubSpot signs the URL)"
    )
    max_body_bytes: int | None = Field(None, ge=1, description="default: api.max_body_bytes")
    dedup_retention: float = Field(259_200.0, gt=0, description="seconds a delivered event id is remembered")
    poll_interval_ms: float = Field(500.0, gt=0, description="journal polling when no wake-up arrives")
    ordering: bool | None = Field(
        None, description="drop events older than the applied version (default: on for stripe and github)"
    )
    max_age: float | None = Field(
        None,
        gt=0,
        description="github and generic: an event whose own timestamp (github: updated_at; generic: "
        "mapping.timestamp) is more than this many seconds old is acknowledged (200) but not journaled",
    )
    max_depth: int = Field(
        DEFAULT_MAX_DEPTH, ge=1, le=MAX_DEPTH, description="objects/arrays nested in a body, at most (else 400)"
    )
    max_width: int = Field(DEFAULT_MAX_WIDTH, ge=1, description="keys of one object or items of one array (else 400)")
    max_values: int = Field(DEFAULT_MAX_VALUES, ge=1, description="values in one body, at most (else 400)")
    stripe: StripeOptions = Field(default_factory=lambda: StripeOptions.model_validate({}))
    github: GitHubOptions = Field(default_factory=lambda: GitHubOptions.model_validate({}))
    signature: SignatureOptions | None = None
    mapping: GenericMapping | None = None

    @model_validator(mode="after")
    def _generic_needs_mapping(self) -> WebhookSourceConfig:
        if self.provider == "generic" and (self.mapping is None or self.signature is None):
            raise ValueError("a generic webhook source needs signature: and mapping:")
        if self.provider != "generic" and (self.mapping is not None or self.signature is not None):
            raise ValueError(f"signature: and mapping: are for provider generic, not {self.provider}")
        m = self.mapping
        if m is not None and m.event_id_header is not None:
            scheme = self.signature.scheme if self.signature is not None else "hmac-sha256"
            if scheme != "standard-webhooks" or m.event_id_header.lower() != "webhook-id":
                raise ValueError(
                    f"event_id_header {m.event_id_header} is not covered by the {scheme} signature: anyone could "
                    "send a captured body again under a new id and have it applied twice. Use event_id: <path to "
                    "the id in the body>, or event_id_hash: true when the body has no id (event_id_header is only "
                    "for webhook-id with scheme standard-webhooks, which signs it)"
                )
        if self.max_age is not None:
            if self.provider in ("stripe", "hubspot"):
                raise ValueError(
                    f"max_age is for senders that sign no timestamp; {self.provider} signs one, and tolerance "
                    "already bounds how old a delivery may be"
                )
            if m is not None and m.timestamp is None:
                raise ValueError("max_age needs mapping.timestamp: the age is that of each event's own timestamp")
        if self.ordering and m is not None and m.version is None and m.timestamp is None:
            raise ValueError(
                "ordering: true on a generic webhook source needs mapping.version or mapping.timestamp "
                "(a path to each event's version, to tell an older event from a newer one)"
            )
        return self

    @property
    def guarded(self) -> bool:
        return self.provider in ("stripe", "github") if self.ordering is None else self.ordering
