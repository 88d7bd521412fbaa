"""Reading MQTT topics (``type: mqtt``) through a persistent session and the state store's intake journal.

``config.py`` is the config model (no driver import); ``source.py`` the source. Connecting, the
idempotency-id property and error translation are shared with the sink (``tidesync.sinks.mqtt.wire``).
"""
