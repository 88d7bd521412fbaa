"""Redis Streams as a destination (``type: redis``): every event XADDed to a stream, exactly once.

``config`` holds the config model (no driver import, so ``tidesync validate``
stays fast), ``sink`` the sink, ``wire`` what the sink and the Redis source
share: the client, the error translation, entry ids and the payload codec.
"""

from tidesync.sinks.redis.config import RedisSinkConfig

__all__ = ["RedisSinkConfig"]
