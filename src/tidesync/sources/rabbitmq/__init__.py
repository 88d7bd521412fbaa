"""Reading a RabbitMQ queue (``type: rabbitmq``), acked only after the engine's checkpoint.

``config.py`` is the config model (no driver import); ``window.py`` the pure de-duplication window
of message ids; ``source.py`` the source. Connecting and error translation are shared with the sink
(``tidesync.sinks.rabbitmq.wire``).
"""
