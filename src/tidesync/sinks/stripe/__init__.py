"""Writing to Stripe: customers (with metadata and address), products and prices, one request per change.

- ``config.py``: the sink's configuration (pydantic).
- ``forms.py``: form encoding with nested keys (pure).
- ``params.py``: a row's columns -> an object's parameters (pure).
- ``prices.py``: what of a price is immutable, and its replacement (pure).
- ``idmap.py``: source key -> Stripe id, in the state store.
- ``sink.py``: the sink: requests, idempotency keys, per-key order, error translation.
"""

from tidesync.sinks.stripe.config import StripeSinkConfig
from tidesync.sinks.stripe.sink import StripeSink

__all__ = ["StripeSink", "StripeSinkConfig"]
