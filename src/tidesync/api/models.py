"""Request and response bodies of the admin API (pydantic, so the OpenAPI schema says exactly what comes back).

Every text that may carry a secret (errors, event values, config-derived
strings) passes :data:`tidesync.secrets.REDACTOR` before it is put into one
of these (see :func:`clean`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from tidesync.event import json_dumps
from tidesync.secrets import REDACTOR

MAX_ID = 2**63 - 1


def clean(value: Any) -> Any:
    """``value`` as plain JSON types (Decimal as text, times as ISO 8601) with every secret masked."""
    return REDACTOR.redact_obj(msgspec.json.decode(json_dumps(value)))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Model):
    detail: str


class PipelineInfo(_Model):
    name: str
    state: str = Field(
        description="starting, running, degraded (running; the DLQ grew in the last 5 minutes), retrying, "
        "blocked (every write would fail: events held, not dead-lettered), paused, draining, stopped, failed, "
        "scheduled (a pipeline with `schedule:` between its runs), or never run"
    )
    running: bool = Field(description="this process runs the pipeline")
    source: str = Field(description="the source's type")
    sink: str = Field(description="the sink's type")
    position: list[Any] | None = Field(description="the checkpoint: where the source resumes after")
    events_applied: int = Field(description="events applied, all runs (from the state store)")
    events_written: int = Field(description="events written by this process")
    events_per_second: float = Field(description="events written per second over the last 5 seconds")
    lag_seconds: float = Field(description="now minus the commit time of the oldest event read but not yet applied")
    latency_p50_seconds: float | None = Field(description="end-to-end latency over the last minute")
    latency_p99_seconds: float | None
    dlq_depth: int
    retained_wal_bytes: int | None = Field(description="Postgres sources: WAL the slot keeps")
    retries: int
    last_error: str | None
    next_attempt_at: float | None
    updated_at: float | None
    blocked_entity: str | None = Field(None, description="blocked: the entity whose write failed first")
    blocked_since: float | None = Field(None, description="blocked: since when (epoch seconds)")


class SyncInfo(_Model):
    name: str
    state: str
    a: str = Field(description="side A's source type")
    b: str = Field(description="side B's source type")
    conflicts_pending: int
    last_error: str | None
    updated_at: float | None


class DeadLetterSummary(_Model):
    id: int
    pipeline: str
    sink: str
    entity: str
    key: list[Any]
    op: str
    error_class: str
    error: str
    attempts: int
    first_failed_at: float
    last_failed_at: float


class DeadLetterDetail(DeadLetterSummary):
    event: dict[str, Any] = Field(description="the parked event, as JSON")


class DlqSelection(_Model):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000, description="entry ids")
    with_blocked: bool | None = Field(
        None, description="also the entries parked behind these (default: yes for replay, no for discard)"
    )


class IdReason(_Model):
    id: int
    reason: str


class ReplayOutcome(_Model):
    written: list[int]
    skipped: list[IdReason]
    failed: list[IdReason]
    waiting: list[int] = Field(description="not tried: an earlier entry of the same key failed")


class DiscardOutcome(_Model):
    discarded: int


class Candidate(_Model):
    value: Any
    at: float


class AgreedValue(_Model):
    value: Any
    at: float
    side: str


class ConflictInfo(_Model):
    id: str
    sync: str
    kind: str = Field(description="conflict (a rule parked it) or rejected (a side refused the write)")
    field: str
    rid: list[Any]
    keys: dict[str, list[Any] | None]
    a: Candidate | None
    b: Candidate | None
    shadow: AgreedValue | None = Field(description="the value both sides last agreed on")
    rule: str
    why: str
    created_at: float
    updated_at: float
    pending_resolution: dict[str, Any] | None = None


class ResolveRequest(_Model):
    take: Literal["a", "b"] | None = Field(None, description="the side whose value wins")
    value: Any = Field(None, description="an explicit value (with use_value)")
    use_value: bool = Field(False, description="write `value` (null included) instead of a side's")
    remember: bool = Field(False, description="with take: that side wins this field from now on")


class ResolutionOutcome(_Model):
    conflict: str
    field: str
    take: str | None
    value: Any
    remember: bool
    rule_line: str | None
    note: str


class ReconcileRequest(_Model):
    repair: bool = False
    chunk_size: int = Field(2000, ge=2, le=1_000_000)


class SnapshotRequest(_Model):
    table: str = Field(min_length=1, max_length=300, description="a table the pipeline's source captures")


class JobInfo(_Model):
    id: int
    kind: Literal["reconcile", "snapshot"]
    pipeline: str
    state: Literal["running", "done", "failed"]
    started_at: float
    finished_at: float | None
    result: dict[str, Any] | None
    error: str | None


class ErrorInfo(_Model):
    seq: int
    at: float
    level: str
    logger: str
    message: str


class AlertInfo(_Model):
    rule: str
    pipeline: str
    metric: str
    phase: Literal["ok", "pending", "firing"]
    since: float
    value: float | None
    above: float
    clear_below: float


class NoticeInfo(_Model):
    rule: str
    pipeline: str
    metric: str
    kind: Literal["fired", "cleared"]
    value: float
    threshold: float
    at: float
    message: str


class AlertsView(_Model):
    alerts: list[AlertInfo]
    notices: list[NoticeInfo] = Field(description="the latest fires and clears, newest first")


class LatencyPoint(_Model):
    t: int = Field(description="epoch second")
    p50: float | None
    p99: float | None
    count: int


class LatencySeries(_Model):
    pipeline: str
    points: list[LatencyPoint]


class Overview(_Model):
    at: float
    pipelines: list[PipelineInfo]
    latency: list[LatencySeries]
    dlq_total: int
    conflicts_pending: int
    alerts_firing: int


class ActionOutcome(_Model):
    pipeline: str
    state: str
    note: str


class ClusterStream(_Model):
    name: str
    messages: int | None = Field(description="messages the stream holds (None: JetStream out of reach)")
    bytes: int | None
    replicas: int
    first_sequence: int | None = None
    last_sequence: int | None = None
    leader: str | None = Field(None, description="the node leading the stream")


class ClusterProcess(_Model):
    process: str = Field(description="host:pid")
    seen_at: float
    leases: list[str] = Field(description="the leases it holds: pipeline:NAME (a capture), apply:GROUP@pN")


class ClusterCapture(_Model):
    pipeline: str
    lease: str
    holder: str | None = Field(description="host:pid holding the capture; None: nobody (it is moving)")
    epoch: int | None


class ClusterPartition(_Model):
    pipeline: str
    group: str = Field(description="the sink group: the pipeline, or PIPELINE.SINK of a fan-out pipeline")
    partition: int
    consumer: str
    lease: str
    holder: str | None
    epoch: int | None
    pending: int | None = Field(description="messages of the partition not yet delivered")
    ack_pending: int | None = Field(description="delivered, not yet applied and acknowledged")


class ClusterInfo(_Model):
    stream: ClusterStream
    processes: list[ClusterProcess]
    captures: list[ClusterCapture]
    partitions: list[ClusterPartition]
    errors: list[str] = Field(description="what could not be read (NATS or the state store out of reach)")
