"""Redis Streams as a source (``type: redis``): a consumer group read with XREADGROUP, acked after the checkpoint.

``config`` holds the config model (no driver import), ``positions`` the pure
position algebra (one entry id per stream, in one tuple), ``source`` the I/O.
"""

from tidesync.sources.redis.config import RedisSourceConfig

__all__ = ["RedisSourceConfig"]
