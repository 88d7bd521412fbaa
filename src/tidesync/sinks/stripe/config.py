"""Configuration of the Stripe sink; pydantic only.

::

    sink:
      type: stripe
      api_key: "${env:STRIPE_KEY}"               # secret or restricted key with write access
      base_url: https://api.stripe.com
      objects:
        public.customers: customers              # entity -> Stripe object (short form)
        public.products: products
        public.prices:                           # mapping form, with options
          object: prices
          product_column: product_id             # the column holding the product's source key
          product_entity: public.products        # whose ID map resolves it (default: the one products entity)
      concurrency: 4                             # keys written at once (one key's events never overlap)
      rate_limit: {per_second: 25}               # default: 25 with a test-mode key, 100 with a live one

Per object: ``metadata_column`` (default ``metadata``) holds a mapping sent as
``metadata[...]``; ``exclude`` names columns never sent (default ``id``: Stripe
assigns its own ids); ``extra_columns`` says what happens to a column that is
not a parameter of the object: ``metadata`` (default: sent as
``metadata[column]``, as text), ``ignore``, or ``error`` (the event is
dead-lettered); ``key_metadata`` (default ``tidesync_key``) is the metadata key
that records the source key on every created object (None: not recorded).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tidesync.secrets import Secret
from tidesync.sources.http.config import HttpOptions, RateLimit

ObjectType = Literal["customers", "products", "prices"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StripeObject(_Strict):
    object: ObjectType = Field(description="the Stripe object an entity's rows become")
    metadata_column: str = Field("metadata", description="column holding a mapping sent as metadata[...]")
    exclude: list[str] = Field(default_factory=lambda: ["id"], description="columns never sent")
    extra_columns: Literal["metadata", "ignore", "error"] = Field(
        "metadata", description="a column that is not a parameter of the object: into metadata, ignored, or an error"
    )
    key_metadata: str | None = Field(
        "tidesync_key", max_length=40, description="metadata key recording the source key on created objects"
    )
    product_column: str = Field("product_id", description="prices: the column holding the product's source key")
    product_entity: str | None = Field(None, description="prices: the entity whose ID map resolves product_column")


def _object_item(value: Any) -> Any:
    return {"object": value} if isinstance(value, str) else value


class StripeSinkConfig(_Strict):
    type: Literal["stripe"] = "stripe"
    api_key: Secret = Field(description="secret or restricted key with write access to the mapped objects")
    base_url: str = Field("https://api.stripe.com", pattern=r"^https?://", description="the API's address")
    objects: dict[str, Annotated[StripeObject, BeforeValidator(_object_item)]] = Field(
        min_length=1, description="entity -> customers | products | prices, or a mapping with options"
    )
    concurrency: int = Field(4, ge=1, le=64, description="keys written at once; one key's events never overlap")
    rate_limit: RateLimit | None = Field(None, description="client-side request rate (default: by the key's mode)")
    http: HttpOptions = Field(
        default_factory=lambda: HttpOptions.model_validate({}), description="per-request timeout and retries"
    )
    stripe_version: str | None = Field(None, description="Stripe-Version header (default: the account's)")

    @model_validator(mode="after")
    def _products_for_prices(self) -> StripeSinkConfig:
        products = [e for e, o in self.objects.items() if o.object == "products"]
        for entity, obj in self.objects.items():
            if obj.object != "prices":
                continue
            if obj.product_entity is None:
                if len(products) != 1:
                    raise ValueError(
                        f"objects.{entity}: set product_entity (the entity mapped to products whose "
                        f"IDs resolve {obj.product_column}); found {len(products)} products entities"
                    )
                obj.product_entity = products[0]
            elif obj.product_entity not in products:
                raise ValueError(f"objects.{entity}: product_entity {obj.product_entity!r} is not mapped to products")
        return self

    def product_entities(self) -> set[str]:
        return {e for e, o in self.objects.items() if o.object == "products"}
