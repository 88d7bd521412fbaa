"""Reading a NATS JetStream stream (``type: nats``) through a durable pull consumer.

``config.py`` is the config model (no driver import); ``source.py`` the source. Connecting, the
payload codec and error translation are shared with the sink (``tidesync.sinks.nats.wire``).
"""
