"""Delivery to RabbitMQ (``type: rabbitmq``), and what the ``rabbitmq`` source shares with it.

- ``config.py``: the sink's config model (imports no driver: ``tidesync validate`` stays fast).
- ``routing.py``: pure routing-key templating (``{entity}``, ``{partition}``).
- ``wire.py``: connecting, and the one place where the driver's errors become
  :mod:`tidesync.errors` (the source in ``tidesync.sources.rabbitmq`` uses it too).
- ``sink.py``: confirmed, persistent, per-key ordered publishes carrying a ``message_id``.
"""
