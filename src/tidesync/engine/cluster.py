"""Scale-out on NATS JetStream: a pipeline split into one capture and an apply per partition and sink group.

With ``cluster:`` in the config, every process on that config runs the same
pieces of work, each under its own lease (:mod:`.lease`), so each piece runs
in exactly one process at a time:

- **capture** ``P`` (lease ``pipeline:P``): the pipeline's source, publishing
  every event to stream ``STREAM`` on subject ``STREAM.P.N``, where ``N`` is a
  stable hash of the event's key modulo ``partitions``
  (:func:`tidesync.sinks.templates.partition_of`), with the event's id as
  ``Nats-Msg-Id`` so a re-publish after a capture failover (within
  ``duplicate_window``) is dropped by the stream. The source's checkpoint (name
  ``P``, the same as without ``cluster:``) moves only after the stream acked.
- **apply** ``G@pN`` (lease ``apply:G@pN``) for each sink group ``G`` (the
  pipeline itself, or each ``NAME.SINK`` of a fan-out pipeline) and partition
  ``N``: a consumer ``G-pN_<random>`` of subject ``STREAM.P.N``, made afresh
  at each open (the ``nats`` source's ``fresh_consumer``), the pipeline's
  transforms, and the group's sink. Its checkpoint is the stream sequence; a
  SQL sink stores it with the data per ``G@pN``, so a partition is applied
  exactly once even when its lease moves between processes. Transforms run on
  the apply side, where the work is spread.

Sink groups consume the stream independently: a fan-out pipeline still reads
its source once (one replication slot), and a slow group holds back only its
own consumers. Every event of a key goes to one partition, so per-key order
holds; partitions are applied in parallel, in whichever processes hold them.

Apply leases are balanced between the processes (:mod:`.balance`); the
capture lease goes to whichever process takes it first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tidesync.config import ClusterConfig, PipelineSpec

__all__ = ["ClusterWork", "apply_name", "consumer_name", "plan", "subject"]


@dataclass(frozen=True, slots=True)
class ClusterWork:
    """One piece of a pipeline's work: its spec (a runnable pipeline) and the lease it runs under."""

    spec: PipelineSpec
    lease: str
    role: str  # "capture" or "apply"
    pipeline: str  # the capture's name: the configured pipeline
    group: str = ""  # apply: the sink group
    partition: int = -1  # apply: the partition


def subject(cluster: ClusterConfig, pipeline: str, partition: int | str) -> str:
    return f"{cluster.stream}.{pipeline}.{partition}"


def apply_name(group: str, partition: int) -> str:
    """The apply pipeline of ``group``'s ``partition``: names its checkpoint, status and metrics."""
    return f"{group}@p{partition}"


def consumer_name(group: str, partition: int) -> str:
    """The durable consumer: letters, digits, ``_`` and ``-`` only (the pipeline name's dots become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{group}-p{partition}")


def plan(cluster: ClusterConfig, specs: Sequence[PipelineSpec]) -> list[ClusterWork]:
    """The captures (one per configured pipeline, however many sinks) and applies of ``specs``."""
    from tidesync.sinks.nats.config import NatsSinkConfig
    from tidesync.sources.nats.config import NatsSourceConfig

    works: list[ClusterWork] = []
    captured: set[str] = set()
    for spec in specs:
        pipeline = spec.fanout or spec.name
        if pipeline not in captured:
            captured.add(pipeline)
            publish = NatsSinkConfig.model_validate(
                {
                    "type": "nats",
                    "url": cluster.nats,
                    "stream": cluster.stream,
                    "subject": subject(cluster, pipeline, "{partition}"),
                    "partitions": cluster.partitions,
                    "format": "tidesync",
                    "stream_subjects": [f"{cluster.stream}.>"],
                    "replicas": cluster.replicas,
                    "duplicate_window": cluster.duplicate_window,
                    "schemas": True,
                }
            )
            config = spec.config.model_copy(update={"name": pipeline, "transforms": []})
            capture = PipelineSpec(config, spec.source, publish, [], spec.index)
            works.append(ClusterWork(capture, f"pipeline:{pipeline}", "capture", pipeline))
        for n in range(cluster.partitions):
            consume = NatsSourceConfig.model_validate(
                {
                    "type": "nats",
                    "url": cluster.nats,
                    "stream": cluster.stream,
                    "consumer": consumer_name(spec.name, n),
                    "subjects": [subject(cluster, pipeline, n)],
                    "format": "tidesync",
                    "fresh_consumer": True,
                }
            )
            name = apply_name(spec.name, n)
            config = spec.config.model_copy(update={"name": name})
            apply = replace(spec, config=config, source=consume, fanout=None)
            works.append(ClusterWork(apply, f"apply:{name}", "apply", pipeline, spec.name, n))
    return works
