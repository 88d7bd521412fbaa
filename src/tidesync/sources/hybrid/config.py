"""Configuration of a hybrid source (``type: hybrid``): a primary event source and a fallback poller.

::

    source:
      type: hybrid
      primary:  {type: webhook, provider: stripe, secrets: ["${env:STRIPE_WHSEC}"]}
      fallback: {type: stripe, api_key: "${env:STRIPE_KEY}", poll_interval: 30s}
      grace: 10s              # how long a change only the poller saw waits for the primary's copy
      dedupe_window: 1d       # how long a version seen by either side is remembered
      match: auto             # auto | event_id | version | values (see tidesync.sources.hybrid)

Both sub-sources are validated by their own models, at their place in the
file (``pipelines[0].source.fallback.api_key: ...``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from tidesync.registry import REGISTRY
from tidesync.sources.polling.config import Seconds

Match = Literal["auto", "event_id", "version", "values"]


def _validate_part(which: str, raw: dict[str, Any]) -> BaseModel:
    type_ = raw.get("type")
    if not isinstance(type_, str):
        raise ValueError(f"{which} needs a type: (one of: {', '.join(REGISTRY.names('source'))})")
    if type_ == "hybrid":
        raise ValueError(f"{which} cannot itself be a hybrid source")
    model: type[BaseModel] = REGISTRY.get("source", type_).model()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # Re-raised with the sub-source's key in front, so the error names the full path and line.
        details: list[Any] = [
            {"type": e["type"], "loc": (which, *e["loc"]), "input": e.get("input"), "ctx": e.get("ctx") or {}}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(exc.title, details) from None


class HybridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["hybrid"] = "hybrid"
    primary: dict[str, Any] = Field(description="the event source: webhook, postgres, ...")
    fallback: dict[str, Any] = Field(description="the poller of the same entities: stripe, hubspot, sql_poll")
    match: Match = Field(
        "auto", description="how an event and a polled change are known to be the same: event id, version, values"
    )
    grace: Seconds = Field(
        10.0, ge=0, description="a change only the fallback saw waits this long after its commit for the primary"
    )
    dedupe_window: Seconds = Field(86_400.0, gt=0, description="how long versions seen are remembered")
    ignore_fields: list[str] = Field(
        default_factory=list, description="match: values compares every field but these (hs_lastmodifieddate, ...)"
    )
    _primary: BaseModel | None = PrivateAttr(None)
    _fallback: BaseModel | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _parts(self) -> HybridConfig:
        self._primary = _validate_part("primary", self.primary)
        self._fallback = _validate_part("fallback", self.fallback)
        p = self._primary
        stripe_opts = getattr(p, "stripe", None) if getattr(p, "type", None) == "webhook" else None
        if stripe_opts is not None and stripe_opts.api_key is not None and stripe_opts.backfill:
            raise ValueError(
                "primary.stripe.backfill would journal the events the fallback polls as if they were delivered, "
                "hiding what the webhooks miss: set primary.stripe.backfill: false (the fallback does that job)"
            )
        return self

    @property
    def primary_model(self) -> BaseModel:
        assert self._primary is not None
        return self._primary

    @property
    def fallback_model(self) -> BaseModel:
        assert self._fallback is not None
        return self._fallback

    @model_validator(mode="after")
    def _match_fits(self) -> HybridConfig:
        """Refuse pairings of built-in sources that cannot match that way (plugins are trusted)."""
        p, f = self.primary_model, self.fallback_model
        p_type, f_type = getattr(p, "type", None), getattr(f, "type", None)
        if self.match == "event_id" and (
            f_type in ("sql_poll", "hubspot")
            or p_type in ("postgres", "sqlite", "sql_poll")
            or (p_type == "webhook" and getattr(p, "provider", None) != "stripe")
        ):
            raise ValueError("match: event_id needs both sides to see the same event ids (a Stripe webhook + stripe)")
        if self.match == "version" and f_type in ("stripe", "hubspot"):
            raise ValueError("match: version needs a sql_poll fallback (its cursor column is the version)")
        return self

    def resolved_match(self) -> Literal["event_id", "version", "values"]:
        """``auto``: event ids for a Stripe webhook with the Stripe poller, cursor versions for a SQL poller."""
        if self.match != "auto":
            return self.match
        p, f = self.primary_model, self.fallback_model
        if getattr(p, "type", None) == "webhook" and getattr(p, "provider", None) == "stripe" and f.type == "stripe":  # type: ignore[attr-defined]
            return "event_id"
        if getattr(f, "type", None) == "sql_poll":
            return "version"
        return "values"
