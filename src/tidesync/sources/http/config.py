"""Configuration of the API polling sources (``type: stripe``, ``type: hubspot``); pydantic only.

::

    source:
      type: stripe
      api_key: "${file:/run/secrets/stripe_key}"   # re-read on every request: rotate without restart
      objects: [customer, invoice]                  # entities to emit (default: every object type)
      snapshot: [customer]                          # listed once at the first start, before the event feed
      poll_interval: 5s
      lookback: 10s                                 # re-list recent events that may have been listed late
      rate_limit: {per_second: 25}                  # default: 25 with a test-mode key, 100 with a live one

    source:
      type: hubspot
      token: "${env:HUBSPOT_PRIVATE_APP_TOKEN}"     # or oauth: {client_id, client_secret, refresh_token}
      objects:
        - contacts                                  # cursor lastmodifieddate, entity hubspot.contact
        - {type: deals, properties: [dealname, amount, dealstage]}
      poll_interval: 10s
      rate_limit: {per_second: 5}                   # the search endpoint's limit per account
      property_history: true                        # an update: one event per distinct property change time

``property_history`` (hubspot, default false): after each search page, the
records that changed since last emitted are read again with their property
history (``POST /crm/v3/objects/{type}/batch/read`` with
``propertiesWithHistory``, at most 50 records a request, so two more requests
per full page of updates, paced by the same ``rate_limit``), and an update whose
properties changed at different times is emitted as several events in time
order, one per distinct time, each naming the properties last changed then and
carrying that time as ``committed_at``. Without it an update is one event at the
record's ``hs_lastmodifieddate`` (``lastmodifieddate`` for contacts). Inserts
and deletes are one event either way. Turn it on for a two-way sync side: the
sync's ``lww`` then compares each property's own change time, so a property
edited in HubSpot before the other side's edit of it loses even when another
property of the record was edited in HubSpot later (see
:mod:`tidesync.sources.http.hubspot_history`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tidesync.secrets import Secret
from tidesync.sources.polling.config import Seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Strict):
    """Requests per second (a token bucket) and how many may go at once after a quiet spell."""

    per_second: float = Field(gt=0, le=10_000, description="requests per second, on average")
    burst: int | None = Field(None, ge=1, description="default: per_second, rounded up")


class HttpOptions(_Strict):
    """Timeouts and retries of single HTTP requests."""

    timeout: Seconds = Field(30.0, gt=0, description="per request")
    max_attempts: int = Field(5, ge=1, le=100, description="tries of one request on 5xx, timeouts, lost connections")
    max_throttled: int = Field(20, ge=0, le=10_000, description="429 answers in a row before the source errors")


class StripeSourceConfig(_Strict):
    type: Literal["stripe"] = "stripe"
    api_key: Secret = Field(description="secret or restricted key (read access to events and the listed objects)")
    base_url: str = Field("https://api.stripe.com", description="the API's address (a local server in tests)")
    objects: list[str] | None = Field(None, description="object types to emit (customer, invoice, ...); default all")
    snapshot: list[str] = Field(default_factory=list, description="object types to list at the first start")
    snapshot_since: float | None = Field(None, description="snapshot only objects created at or after (unix s)")
    list_paths: dict[str, str] = Field(
        default_factory=dict, description="list endpoint per object type (default /v1/<type>s)"
    )
    types: list[str] | None = Field(
        None, max_length=20, description="event types to ask for (the Events API types[] filter)"
    )
    poll_interval: Seconds = Field(5.0, gt=0, description="time between polls of the Events API")
    lookback: Seconds = Field(10.0, ge=0, le=86_400, description="re-list events this far below the newest applied")
    page_size: int = Field(100, ge=1, le=100, description="objects per list request (Stripe allows 100)")
    rate_limit: RateLimit | None = Field(None, description="client-side request rate (default: none; 429s back off)")
    http: HttpOptions = Field(
        default_factory=lambda: HttpOptions.model_validate({}), description="per-request timeout and retries"
    )
    stripe_version: str | None = Field(None, description="Stripe-Version header (default: the account's)")
    progress: bool = Field(
        True, description="show the snapshot's progress: a bar on a terminal, a log line every 10s elsewhere"
    )

    def list_path(self, object_type: str) -> str:
        return self.list_paths.get(object_type) or f"/v1/{object_type}s"


class OAuth2Config(_Strict):
    """OAuth 2 refresh-token grant: the access token is refreshed before it expires."""

    client_id: str = Field(min_length=1, description="the app's client id")
    client_secret: Secret = Field(description="the app's client secret")
    refresh_token: Secret = Field(description="the refresh token of the installation")
    token_url: str | None = Field(None, description="default: <base_url>/oauth/v1/token")
    refresh_margin: Seconds = Field(300.0, ge=0, description="refresh this long before the access token expires")


_CONTACT_CURSOR = "lastmodifieddate"
_SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal", "tickets": "ticket",
             "products": "product", "line_items": "line_item", "quotes": "quote", "calls": "call",
             "emails": "email", "meetings": "meeting", "notes": "note", "tasks": "task"}  # fmt: skip


class HubSpotObject(_Strict):
    type: str = Field(min_length=1, description="object type in the API path: contacts, deals, 2-1234567, ...")
    properties: list[str] | None = Field(None, description="properties to read (default: HubSpot's default set)")
    cursor: str | None = Field(None, description="default: lastmodifieddate for contacts, else hs_lastmodifieddate")
    entity: str | None = Field(None, description="default: hubspot.<singular type> (hubspot.contact)")

    @property
    def cursor_property(self) -> str:
        return self.cursor or (_CONTACT_CURSOR if self.type == "contacts" else "hs_lastmodifieddate")

    @property
    def entity_name(self) -> str:
        return self.entity or f"hubspot.{_SINGULAR.get(self.type, self.type)}"


def _object_item(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class HubSpotSourceConfig(_Strict):
    type: Literal["hubspot"] = "hubspot"
    token: Secret | None = Field(None, description="private app access token")
    oauth: OAuth2Config | None = Field(None, description="OAuth 2 instead of a private app token")
    base_url: str = Field("https://api.hubapi.com", description="the API's address (a local server in tests)")
    objects: list[Annotated[HubSpotObject, BeforeValidator(_object_item)]] = Field(
        min_length=1, description="CRM objects to read: a type name, or a mapping with type/properties/cursor/entity"
    )
    poll_interval: Seconds = Field(10.0, gt=0, description="time between search passes")
    lookback: Seconds = Field(
        60.0, ge=0, description="re-read records modified this long before the high-water mark (search index lag)"
    )
    settle: Seconds = Field(
        0.0, ge=0, description="leave the newest seconds for the next pass (records not yet searchable)"
    )
    page_size: int = Field(100, ge=1, le=200, description="records per search request (HubSpot allows 200)")
    max_results: int = Field(10_000, ge=100, description="the search API's ceiling per query")
    rate_limit: RateLimit = Field(
        default_factory=lambda: RateLimit.model_validate({"per_second": 5}),
        description="client-side request rate (search allows 5 per second per account)",
    )
    http: HttpOptions = Field(
        default_factory=lambda: HttpOptions.model_validate({}), description="per-request timeout and retries"
    )
    shadow_scope: str | None = Field(None, description="scope of the shadow rows (default: the pipeline name)")
    property_history: bool = Field(
        False,
        description=(
            "per-property change times: read each updated record's property history (batch read with "
            "propertiesWithHistory, 50 records a request) and emit an update as one event per distinct change "
            "time, so a two-way sync's lww compares each property's own time (default: one event at the "
            "record's last-modified time)"
        ),
    )
    progress: bool = Field(
        True, description="show the first pass's progress: a bar on a terminal, a log line every 10s elsewhere"
    )

    @model_validator(mode="after")
    def _one_credential(self) -> HubSpotSourceConfig:
        if (self.token is None) == (self.oauth is None):
            raise ValueError("give exactly one of token (a private app token) or oauth")
        entities = [o.entity_name for o in self.objects]
        dup = {e for e in entities if entities.count(e) > 1}
        if dup:
            raise ValueError(f"two objects would produce the same entity: {', '.join(sorted(dup))}")
        return self
