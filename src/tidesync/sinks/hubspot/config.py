"""Configuration of the HubSpot sink (``type: hubspot``); pydantic only.

::

    sink:
      type: hubspot
      token: "${env:HUBSPOT_TOKEN}"            # private app token (crm.objects.*.write scopes)
      base_url: https://api.hubapi.com
      objects:
        public.customers:                      # source entity
          type: contacts                       # HubSpot object type: contacts, companies, deals, 2-1234567, ...
          id_property: email                   # unique property upserts match on (default: tidesync_key)
          properties: {first_name: firstname}  # column -> property renames (default: the column's name)
          exclude: [internal_notes]            # columns never sent
          associations:
            company_id: public.companies       # this column holds the source key of a public.companies row
        public.companies: {type: companies}    # upserted by tidesync_key, which holds the source key
      rate_limit: {per_second: 10, burst: 10}  # 100 requests per 10 s: a private app's default limit

Every column of an object's rows is sent as the property of the same name,
except ``exclude``, the association columns, and primary-key columns (as the
source publishes them) for which HubSpot has no property. With the default
``id_property`` (``tidesync_key``) the sink writes the record's source key, as
text, into that property; it must exist in HubSpot as a property with unique
values (``hasUniqueValue``). With another ``id_property``, the value comes
from the column that maps to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidesync.secrets import Secret
from tidesync.sources.http.config import HttpOptions, RateLimit

KEY_PROPERTY = "tidesync_key"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubSpotObjectSpec(_Strict):
    """Where one source entity goes in HubSpot, and how its columns become properties."""

    type: str = Field(min_length=1, description="object type in the API path: contacts, companies, deals, 2-1234567")
    id_property: str = Field(
        KEY_PROPERTY, min_length=1, description="unique property batch upserts match on (default: tidesync_key)"
    )
    properties: dict[str, str] = Field(default_factory=dict, description="column -> property name renames")
    exclude: list[str] = Field(default_factory=list, description="columns that are never sent")
    associations: dict[str, str] = Field(
        default_factory=dict,
        description="column -> source entity: the column holds the source key of a record of that entity, "
        "and the record is associated with it (the v4 default association)",
    )

    def property_of(self, column: str) -> str:
        return self.properties.get(column, column)

    @property
    def keyed_by_source(self) -> bool:
        """True when the upsert property holds the source key (so any key can be looked up by it)."""
        return self.id_property == KEY_PROPERTY


def _default_rate() -> RateLimit:
    return RateLimit.model_validate({"per_second": 10, "burst": 10})


class HubSpotSinkConfig(_Strict):
    type: Literal["hubspot"] = "hubspot"
    token: Secret = Field(description="private app access token")
    base_url: str = Field("https://api.hubapi.com", description="the API's address (a local server in tests)")
    objects: dict[str, HubSpotObjectSpec] = Field(min_length=1, description="source entity -> HubSpot object")
    batch_size: int = Field(100, ge=1, le=100, description="inputs per batch request (HubSpot allows 100)")
    rate_limit: RateLimit = Field(default_factory=_default_rate, description="client-side request rate")
    http: HttpOptions = Field(
        default_factory=lambda: HttpOptions.model_validate({}), description="per-request timeout and retries"
    )

    @model_validator(mode="after")
    def _targets_exist(self) -> HubSpotSinkConfig:
        for entity, spec in self.objects.items():
            for column, target in spec.associations.items():
                if target not in self.objects:
                    raise ValueError(
                        f"objects.{entity}.associations.{column}: {target!r} is not one of the objects "
                        f"({', '.join(sorted(self.objects))})"
                    )
        return self
