"""What ``tidesync status`` and ``/api/cluster`` show of a cluster: processes, leases, partition lag, stream depth.

Read from the state store (members, leases) and from JetStream (the stream's
depth, each partition consumer's pending count); either may be out of reach,
and then the view says so in ``errors`` instead of failing: a status command
must work while half the cluster is down.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tidesync.config import ClusterConfig
from tidesync.engine.balance import MEMBERS_NAMESPACE
from tidesync.engine.cluster import ClusterWork
from tidesync.errors import StateStoreError
from tidesync.state.store import Leases, StateStore

__all__ = ["cluster_view"]


def _holder(owner: str) -> str:
    return owner.partition("#")[0]


async def cluster_view(
    store: StateStore, cluster: ClusterConfig, works: Sequence[ClusterWork], ttl: float, timeout: float = 3.0
) -> dict[str, Any]:
    """The cluster as a JSON-able dict: ``stream``, ``processes``, ``captures``, ``partitions``, ``errors``."""
    errors: list[str] = []
    now = time.time()
    members: dict[str, float] = {}
    held: dict[str, tuple[str, int]] = {}
    try:
        for key, note in (await store.kv_scan(MEMBERS_NAMESPACE)).items():
            if isinstance(note, dict) and now - float(note.get("seen_at", 0)) < ttl:
                members[key] = float(note["seen_at"])
        if isinstance(store, Leases):
            held = {x.name: (x.owner, x.epoch) for x in await store.lease_list() if x.remaining > 0}
    except StateStoreError as exc:
        errors.append(f"state store: {exc}")
    stream, pending = await _jetstream(cluster, works, timeout, errors)
    processes = [
        {
            "process": _holder(owner),
            "seen_at": seen,
            "leases": sorted(name for name, (o, _) in held.items() if o == owner),
        }
        for owner, seen in sorted(members.items())
    ]
    captures, partitions = [], []
    for w in works:
        owner, epoch = held.get(w.lease, ("", 0))
        row: dict[str, Any] = {"lease": w.lease, "holder": _holder(owner) or None, "epoch": epoch or None}
        if w.role == "capture":
            captures.append({"pipeline": w.pipeline, **row})
        else:
            consumer = str(w.spec.source.consumer)  # type: ignore[attr-defined]
            lag: dict[str, int | None] = {"pending": None, "ack_pending": None, **pending.get(consumer, {})}
            partitions.append(
                {"pipeline": w.pipeline, "group": w.group, "partition": w.partition, "consumer": consumer, **row, **lag}
            )
    return {
        "stream": stream,
        "processes": processes,
        "captures": captures,
        "partitions": partitions,
        "errors": errors,
    }


async def _jetstream(
    cluster: ClusterConfig, works: Sequence[ClusterWork], timeout: float, errors: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    import nats

    stream: dict[str, Any] = {"name": cluster.stream, "messages": None, "bytes": None, "replicas": cluster.replicas}
    pending: dict[str, dict[str, int]] = {}
    try:
        nc = await nats.connect(
            servers=[u.strip() for u in cluster.nats.split(",")],
            connect_timeout=timeout,
            allow_reconnect=False,
            name="tidesync:status",
        )
    except Exception as exc:
        errors.append(f"NATS at {cluster.nats}: {type(exc).__name__}: {exc}")
        return stream, pending
    try:
        js = nc.jetstream(timeout=timeout)
        info = await js.stream_info(cluster.stream)
        stream |= {
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "first_sequence": info.state.first_seq,
            "last_sequence": info.state.last_seq,
            "leader": info.cluster.leader if info.cluster else None,
        }
        # Each partition's consumer is made afresh at each open (CONSUMER_<random>): the newest one counts.
        newest: dict[str, Any] = {}
        for c in await js.consumers_info(cluster.stream):
            base = c.name.rpartition("_")[0]
            if base and (base not in newest or c.created > newest[base].created):
                newest[base] = c
        for base, c in newest.items():
            pending[base] = {"pending": c.num_pending or 0, "ack_pending": c.num_ack_pending or 0}
    except Exception as exc:
        errors.append(f"JetStream stream {cluster.stream}: {type(exc).__name__}: {exc}")
    finally:
        await nc.close()
    return stream, pending
