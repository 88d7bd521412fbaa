"""tidesync: a real-time data synchronization engine."""

from tidesync.event import Batch, ChangeEvent

__all__ = ["Batch", "ChangeEvent"]
__version__ = "0.1.0"
