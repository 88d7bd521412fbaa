"""Dead-letter replay: parked events go through the normal write path and leave the queue only when written.

Rules
- Entries are replayed in id order (the order they were parked), so per-key
  order holds. When an entry of a key fails again, later entries of that key
  are not tried in this run.
- Replaying an entry also replays the entries parked *behind* it (same
  pipeline, sink and key, error class ``blocked``) unless ``with_blocked`` is
  false: they never failed themselves, they only waited.
- A stale replay must not roll data back: for every key that ever left the
  queue by replay, the state store remembers the newest position written that
  way. An entry at or before it is not written; it is removed and reported as
  skipped, naming the newer entry that superseded it.
- Entries that failed a transform are transformed again with the pipeline's
  current transforms first (a fixed mapping rescues them).
- The running engine notices the change (a generation counter in the state
  store, :data:`~tidesync.engine.parked.GENERATION_NS`) and stops parking
  events of keys that are no longer in the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.parked import GENERATION_NS
from tidesync.engine.retrying import RetriesExhausted, RetryingWriter
from tidesync.errors import DeliveryError, PartialBatchError
from tidesync.event import Key, json_dumps
from tidesync.protocols import Context, Sink

if TYPE_CHECKING:
    from tidesync.transform.chain import Transform
from tidesync.retry import RetryPolicy
from tidesync.state.store import DeadLetter, DeadLetterFilter, StateChanges, StateStore

APPLIED_NS = "dlq_applied"


def applied_namespace(pipeline: str, sink: str) -> str:
    return f"{APPLIED_NS}:{pipeline}:{sink}"


def key_id(entity: str, key: Key) -> str:
    return json_dumps([entity, list(key)]).decode()


@dataclass
class ReplayReport:
    written: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (id, why)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (id, error)
    waiting: list[int] = field(default_factory=list)  # not tried: an earlier entry of the key failed


async def select_entries(state: StateStore, flt: DeadLetterFilter, *, with_blocked: bool = True) -> list[DeadLetter]:
    chosen = await state.dlq_list(flt)
    if not with_blocked or not chosen:
        return chosen
    ids = {e.id for e in chosen}
    keys = {(e.pipeline, e.sink, e.entity, e.key) for e in chosen}
    first = min(ids)
    for pipeline in {e.pipeline for e in chosen}:
        for e in await state.dlq_list(DeadLetterFilter(pipeline=pipeline, error_class="blocked")):
            if e.id > first and e.id not in ids and (e.pipeline, e.sink, e.entity, e.key) in keys:
                chosen.append(e)
                ids.add(e.id)
    chosen.sort(key=lambda e: e.id)
    return chosen


async def replay(
    state: StateStore,
    sink: Sink,
    entries: Sequence[DeadLetter],
    *,
    transform: Transform | None = None,
    clock: Clock = SYSTEM_CLOCK,
    retry: RetryPolicy | None = None,
    open_sink: bool = True,
    counted: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay ``entries`` (of one pipeline and sink) into ``sink``; see the module rules.

    ``counted``: told 1 for each entry once it is handled (written, skipped, failed or left waiting).
    """
    report = ReplayReport()
    if not entries:
        return report
    pipeline, sink_name = entries[0].pipeline, entries[0].sink
    if any(e.pipeline != pipeline or e.sink != sink_name for e in entries):
        raise ValueError("replay takes entries of one pipeline and sink at a time")
    writer = RetryingWriter(sink, retry or RetryPolicy(initial_delay=0.2, max_delay=5.0, max_attempts=3), clock)
    ns = applied_namespace(pipeline, sink_name)
    failed_keys: set[tuple[str, Key]] = set()
    if open_sink:
        await sink.open(Context(pipeline=pipeline, name=sink_name, state=state, clock=clock))
    try:
        for entry in _counting(sorted(entries, key=lambda e: e.id), counted):
            k = (entry.entity, entry.key)
            if k in failed_keys:
                report.waiting.append(entry.id)
                continue
            kid = key_id(*k)
            newest = await state.kv_get(ns, kid)
            if newest is not None and entry.event.position and tuple(entry.event.position) <= tuple(newest["position"]):
                why = f"stale: entry #{newest['entry']} already wrote a newer version of this record"
                await state.commit(pipeline, StateChanges(dlq_remove=[entry.id]))
                report.skipped.append((entry.id, why))
                continue
            event = entry.event
            if entry.error_class == "transform" and transform is not None:
                out, failures = transform.apply([event])
                if failures:
                    await state.dlq_touch(entry.id, failures[0][1], "transform", clock.time())
                    report.failed.append((entry.id, failures[0][1]))
                    failed_keys.add(k)
                    continue
                if not out:  # filtered out by the current transforms: nothing to write
                    await state.commit(pipeline, StateChanges(dlq_remove=[entry.id]))
                    report.skipped.append((entry.id, "filtered out by the current transforms"))
                    continue
                event = out[0]
            try:
                await writer.write([event], replay=True)
            except (DeliveryError, RetriesExhausted) as exc:
                err = exc.failures.get(0, exc) if isinstance(exc, PartialBatchError) else exc
                error_class = "transient" if isinstance(err, RetriesExhausted) else err.error_class
                await state.dlq_touch(entry.id, str(err), error_class, clock.time())
                report.failed.append((entry.id, str(err)))
                failed_keys.add(k)
                continue
            put: dict[tuple[str, str], Any] = {}
            if entry.event.position:
                put[(ns, kid)] = {"position": list(entry.event.position), "entry": entry.id}
            await state.commit(pipeline, StateChanges(dlq_remove=[entry.id], kv_put=put))
            report.written.append(entry.id)
    finally:
        await bump_generation(state, pipeline)
        if open_sink:
            await sink.close()
    return report


def _counting(entries: Iterable[DeadLetter], counted: Callable[[int], None] | None) -> Iterator[DeadLetter]:
    """``entries``, telling ``counted`` of each once the loop comes back for the next (so after every ``continue``)."""
    for entry in entries:
        yield entry
        if counted is not None:
            counted(1)


async def discard(state: StateStore, entries: Sequence[DeadLetter]) -> int:
    removed = await state.dlq_remove([e.id for e in entries])
    for pipeline in {e.pipeline for e in entries}:
        await bump_generation(state, pipeline)
    return removed


async def bump_generation(state: StateStore, pipeline: str) -> None:
    current = await state.kv_get(GENERATION_NS, pipeline) or 0
    await state.kv_put(GENERATION_NS, pipeline, int(current) + 1)
