"""tidesync: a real-time data synchronization engine."""

from importlib.metadata import PackageNotFoundError, version

from tidesync.event import Batch, ChangeEvent

__all__ = ["Batch", "ChangeEvent"]
try:
    __version__ = version("tidesync")  # one source of truth: pyproject.toml's version, through package metadata
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
