"""Delivery to NATS JetStream (``type: nats``), and what the ``nats`` source shares with it.

- ``config.py``: the sink's config model (imports no driver: ``tidesync validate`` stays fast).
- ``subjects.py``: pure subject templating and key partitioning.
- ``wire.py``: connecting, the payload codec, and the one place where the driver's errors
  become :mod:`tidesync.errors` (the source in ``tidesync.sources.nats`` uses it too).
- ``sink.py``: publishing with per-key order and ``Nats-Msg-Id`` de-duplication.
- ``publish.py``: the hot path: plain publishes with bounded in-flight acks over one reply inbox.
"""
