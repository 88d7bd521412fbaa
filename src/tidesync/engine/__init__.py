"""The engine: pipeline runners, delivery policy, lifecycle."""

from tidesync.engine.engine import Engine
from tidesync.engine.runner import BatchPolicy, PipelineRunner

__all__ = ["BatchPolicy", "Engine", "PipelineRunner"]
