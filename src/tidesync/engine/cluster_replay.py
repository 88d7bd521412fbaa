"""``tidesync replay``: a sink group of a cluster re-applies its partitions from a stream sequence or time.

How: the command rewinds each partition's checkpoint, and the cluster's own
apply workers do the re-applying.

1. It asks the workers to let go of the group's partitions: a hold per
   partition lease (kv namespace ``cluster_hold``). A worker holding one hands
   it over at its next renewal (a third of the TTL) after draining and
   checkpointing; no worker takes a held partition.
2. It takes each partition's lease itself (waiting up to ``wait`` seconds for
   a worker to let go), and, under the lease's fence, sets the partition's
   checkpoint to just before the first message to re-apply: the sequence
   given, or the first message stored at or after the time given (asked of
   JetStream, per partition subject).
3. It releases the leases and removes the holds. The workers take the
   partitions back and open them at the rewound checkpoints: their consumers
   are re-created there (the ``nats`` source's restart rule) and the messages
   flow through the transforms to the sink again.

Idempotent for SQL sinks: a SQL sink stores each partition's applied position
with the data and skips events at or before it, so re-applying what the
destination already holds changes nothing, and replaying twice is the same as
once. To re-apply into a destination restored from a backup, restore its
``_tidesync_applied`` table with it: it holds the positions the backup holds,
so exactly what the backup lacks is applied. Other sinks (webhooks, brokers)
receive the messages again. A partition whose checkpoint is already before
the start is left alone (nothing is skipped forward).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.config import ClusterConfig
from tidesync.engine.balance import HOLD_NAMESPACE
from tidesync.engine.cluster import ClusterWork
from tidesync.errors import ConfigError, LeaseLostError, SourceError
from tidesync.retry import RetryPolicy
from tidesync.state.store import Fence, Leases, StateChanges, StateStore

__all__ = ["HOLD_NAMESPACE", "Rewound", "rewind"]

log = logging.getLogger("tidesync.cluster")
# Asking for a held lease again: a worker lets go at its next renewal, so a steady 0.2 s; ``wait`` bounds it.
TAKE_RETRY = RetryPolicy(initial_delay=0.2, multiplier=1.0, jitter="none")


@dataclass(frozen=True, slots=True)
class Rewound:
    """One partition: its checkpoint (a stream sequence) before and after the rewind."""

    pipeline: str
    partition: int
    before: int | None
    after: int | None


async def rewind(
    store: StateStore,
    cluster: ClusterConfig,
    works: Sequence[ClusterWork],
    owner: str,
    *,
    sequence: int | None = None,
    time: dt.datetime | None = None,
    ttl: float = 5.0,
    wait: float = 60.0,
    clock: Clock = SYSTEM_CLOCK,
) -> list[Rewound]:
    """Rewind every partition of ``works`` (apply works of one sink group); see the module docstring."""
    if (sequence is None) == (time is None):
        raise ConfigError("give one of --from-sequence or --from-time")
    if not isinstance(store, Leases):
        raise ConfigError("replay needs a state store with leases (Postgres or SQLite)")
    out: list[Rewound] = []
    for w in works:
        await store.kv_put(HOLD_NAMESPACE, w.lease, {"by": owner})
    try:
        starts = await _starts(cluster, works, sequence, time)
        for w in works:
            lease = await _take(store, w.lease, owner, ttl, wait, clock)
            try:
                before = await store.load_checkpoint(w.spec.name)
                was = int(before[0]) if before else None
                start = starts[w.spec.name]
                target = None if start is None else start - 1
                if target is not None and (was is None or target < was):
                    store.fence_commits(w.spec.name, Fence(w.lease, lease))
                    try:
                        await store.commit(w.spec.name, StateChanges(checkpoint=(target,)))
                    finally:
                        store.fence_commits(w.spec.name, None)
                    log.info("replay: %s rewound from %s to %s", w.spec.name, was, target)
                    out.append(Rewound(w.spec.name, w.partition, was, target))
                else:
                    out.append(Rewound(w.spec.name, w.partition, was, was))
            finally:
                await store.lease_release(w.lease, owner, lease)
    finally:
        for w in works:
            await store.kv_delete(HOLD_NAMESPACE, w.lease)
    return out


class _Held(Exception):
    """The lease is another owner's still (the retry loop's retryable error)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


async def _take(store: Leases, name: str, owner: str, ttl: float, wait: float, clock: Clock = SYSTEM_CLOCK) -> int:
    """Take lease ``name`` (a worker lets go at its next renewal); its epoch. Raises after ``wait`` seconds."""
    epoch = 0
    try:
        async for attempt in replace(TAKE_RETRY, max_age=wait).attempts(clock, lambda exc: isinstance(exc, _Held)):
            with attempt:
                got = await store.lease_acquire(name, owner, ttl)
                if got.owner != owner:
                    raise _Held(got.owner)
                epoch = got.epoch
    except _Held as held:
        raise LeaseLostError(
            f"{name} is still held by {held.holder.partition('#')[0]} after {wait:.0f}s: is that process "
            "frozen, or running an older tidesync without replay? Try again, or stop it first"
        ) from None
    return epoch


async def _starts(
    cluster: ClusterConfig, works: Sequence[ClusterWork], sequence: int | None, time: dt.datetime | None
) -> dict[str, int | None]:
    """Per apply work, the first stream sequence to re-apply (None: nothing stored from then on)."""
    if sequence is not None:
        return {w.spec.name: sequence for w in works}
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    assert time is not None
    nc = await nats.connect(servers=[u.strip() for u in cluster.nats.split(",")], connect_timeout=3)
    try:
        js = nc.jetstream()
        out: dict[str, int | None] = {}
        for w in works:
            subject = w.spec.source.subjects[0]  # type: ignore[attr-defined]
            # An ephemeral consumer asked to start at the time: its first message is the one we want.
            sub = await js.pull_subscribe(
                subject,
                stream=cluster.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_TIME,
                    opt_start_time=time,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=10.0,
                ),
            )
            try:
                if (await sub.consumer_info()).num_pending == 0:
                    out[w.spec.name] = None  # nothing stored at or after the time on this partition
                else:
                    msgs = await sub.fetch(1, timeout=10)
                    out[w.spec.name] = msgs[0].metadata.sequence.stream
            finally:
                await sub.unsubscribe()
        return out
    except Exception as exc:
        raise SourceError(f"JetStream stream {cluster.stream}: {type(exc).__name__}: {exc}") from exc
    finally:
        await nc.close()
