"""Delivery to an MQTT broker (``type: mqtt``), and what the ``mqtt`` source shares with it.

- ``config.py``: the sink's config model (imports no driver: ``tidesync validate`` stays fast).
- ``topics.py``: pure topic templating (``{entity}``, ``{partition}``; the partition hash is the
  nats sink's, so a key lands in the same partition number on either broker).
- ``wire.py``: the broker URL, connecting (MQTT 5), the idempotency-id user property, and the one
  place where the driver's errors become :mod:`tidesync.errors` (the source uses it too).
- ``sink.py``: QoS 1 publishes awaited for their PUBACK, with per-key order.
"""
