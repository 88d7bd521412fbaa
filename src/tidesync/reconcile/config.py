"""Reconciliation settings: the ``reconcile:`` key of a pipeline, and the options of one run.

::

    pipelines:
      - name: crm-to-billing
        ...
        reconcile: {every: 1h, repair: true, chunk_size: 2000, rate: 50000}

Only pydantic is imported here, so validating a config loads no driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from tidesync.sources.polling.config import Seconds

DEFAULT_CHUNK = 2000
DEFAULT_FANOUT = 8
DEFAULT_LEAF = 64


class ReconcileSchedule(BaseModel):
    """Run a reconciliation of the pipeline every ``every`` while ``tidesync run`` runs it."""

    model_config = ConfigDict(extra="forbid")

    every: Seconds = Field(gt=0, description="time between runs, e.g. 30m, 1h, 1d")
    repair: bool = Field(False, description="write corrective events for the drift found")
    chunk_size: int = Field(DEFAULT_CHUNK, ge=2, le=1_000_000, description="keys per top-level chunk")
    rate: float | None = Field(None, gt=0, description="rows per second read from each side (default: unlimited)")

    def options(self) -> ReconcileOptions:
        return ReconcileOptions(repair=self.repair, chunk_size=self.chunk_size, rate=self.rate)


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """One run. ``mode``: ``auto`` hashes in the databases where both sides can produce the same
    row text (same dialect, same column types, only renames/selects/drops in between), else in
    Python; ``python`` always hashes in Python."""

    repair: bool = False
    chunk_size: int = DEFAULT_CHUNK
    rate: float | None = None
    fanout: int = DEFAULT_FANOUT
    leaf_size: int = DEFAULT_LEAF
    mode: str = "auto"
    confirm_batch: int = 500
    max_listed: int = 1000  # differences kept per table for the report (all are counted and repaired)
