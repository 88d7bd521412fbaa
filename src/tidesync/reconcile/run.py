"""One reconciliation of a pipeline: resolve its tables, walk them, settle the suspects, repair.

::

    report = await reconcile_pipeline(loaded_config, "crm-to-billing", ReconcileOptions(repair=True))
    report.drift        # confirmed differences, all tables
    report.tables[0].source_counters.rows_read

The state store is opened only to repair (dead letters of repair writes go to
the pipeline's queue); a report-only run touches nothing but SELECTs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.config import LoadedConfig, PipelineSpec
from tidesync.engine.build import build_sink, build_transform
from tidesync.engine.delivery import DeadLetterWriter, ParkedKeys, RetryingWriter
from tidesync.engine.replay import bump_generation
from tidesync.event import ChangeEvent
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.reconcile.compare import Lineup, Walker
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.settle import Difference, Settled, settle
from tidesync.reconcile.side import Counters, Reader
from tidesync.reconcile.target import TablePair, resolve_pair, sink_dsn, source_dsn, source_tables
from tidesync.retry import RetryPolicy
from tidesync.schema import SchemaRegistry
from tidesync.sources.polling.dialect import create_engine
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore

log = logging.getLogger("tidesync.reconcile")
SINK_NAME = "sink"  # the name the engine gives a pipeline's sink


@dataclass
class TableReport:
    entity: str
    source: str
    dest: str
    mode: str
    why_python: str
    chunks: int
    chunks_differing: int
    leaves: int
    suspects: int
    result: Settled
    source_counters: Counters
    dest_counters: Counters
    top_hashed: dict[str, int]
    seconds: float
    warnings: tuple[str, ...] = ()

    @property
    def differences(self) -> list[Difference]:
        return self.result.listed

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "entity": self.entity,
            "source": self.source,
            "dest": self.dest,
            "mode": self.mode,
            "why_python": self.why_python or None,
            "missing": r.missing,
            "extra": r.extra,
            "different": r.different,
            "settled": r.settled,
            "unmappable": r.unmappable,
            "repaired": r.repaired,
            "dead_lettered": r.dead_lettered,
            "chunks": self.chunks,
            "chunks_differing": self.chunks_differing,
            "leaves": self.leaves,
            "read": {
                "source": {**self.source_counters.as_dict(), "top_level_hashed": self.top_hashed["source"]},
                "dest": {**self.dest_counters.as_dict(), "top_level_hashed": self.top_hashed["dest"]},
            },
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            "differences": [{"kind": d.kind, "key": list(d.key), "fields": list(d.fields)} for d in r.listed],
        }


@dataclass
class PipelineReport:
    pipeline: str
    repair: bool
    tables: list[TableReport] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return sum(t.result.drift for t in self.tables)

    @property
    def unrepaired(self) -> int:
        if not self.repair:
            return self.drift
        return sum(t.result.dead_lettered for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "repair": self.repair,
            "drift": self.drift,
            "tables": [t.as_dict() for t in self.tables],
        }


class Repairer:
    """Writes repair events through the pipeline's sink with the engine's retry and dead-letter policy."""

    def __init__(self, spec: PipelineSpec, store: StateStore, clock: Clock) -> None:
        self.spec = spec
        self.store = store
        self.clock = clock
        self.sink = build_sink(spec)
        writer = RetryingWriter(self.sink, RetryPolicy(initial_delay=0.2, max_delay=5.0, max_attempts=5), clock)
        keys = ParkedKeys(spec.name, SINK_NAME, store)  # loaded at open; no refresh: a repair run is short
        self.delivery = DeadLetterWriter(writer, spec.name, SINK_NAME, clock, keys=keys)
        self.parked_any = False

    async def open(self, schemas: SchemaRegistry) -> None:
        await self.delivery.keys.load()
        await self.sink.open(Context(self.spec.name, SINK_NAME, self.store, self.clock, schemas))

    async def __call__(self, events: list[ChangeEvent]) -> int:
        letters = await self.delivery.deliver(events)
        if letters:
            await self.store.commit(self.spec.name, StateChanges(dead_letters=letters))
            self.parked_any = True
            log.warning("reconcile %s: %d repair(s) dead-lettered", self.spec.name, len(letters))
        return len(letters)

    async def close(self) -> None:
        try:
            await self.sink.close()
        finally:
            if self.parked_any:
                await bump_generation(self.store, self.spec.name)


async def reconcile_pipeline(
    loaded: LoadedConfig,
    name: str,
    options: ReconcileOptions,
    *,
    clock: Clock = SYSTEM_CLOCK,
    store: StateStore | None = None,
    progress: Progress | None = None,
) -> PipelineReport:
    """Compare (and with ``options.repair``, repair) every table of pipeline ``name``.

    ``store``: an open state store to use for repairs; else the config's is opened and closed here.
    ``progress``: where to show source rows compared, per table (the command line's; a scheduled run has none).
    """
    spec = loaded.pipeline(name)
    transform = build_transform(spec.transforms)
    src_engine = create_engine(source_dsn(spec))
    dst_dsn, keep_schema = sink_dsn(spec)
    dst_engine = create_engine(dst_dsn)
    try:
        pairs = await asyncio.to_thread(
            lambda: [
                resolve_pair(spec, transform, e, t, k, src_engine, dst_engine, keep_schema, options.mode)
                for e, t, k in source_tables(spec)
            ]
        )
    finally:
        src_engine.dispose()
        dst_engine.dispose()
    report = PipelineReport(name, options.repair)
    own_store = store is None and options.repair
    repairer: Repairer | None = None
    if options.repair:
        if store is None:
            store = open_state_store(loaded.state_url)
            await store.open()
        schemas = SchemaRegistry()
        for p in pairs:
            schemas.put(transform.map_schema(p.schema) if transform is not None else p.schema)
        repairer = Repairer(spec, store, clock)
        await repairer.open(schemas)
    try:
        for pair in pairs:
            report.tables.append(await reconcile_table(pair, transform, options, clock, repairer, progress))
    finally:
        if repairer is not None:
            await repairer.close()
        if own_store and store is not None:
            await store.close()
    return report


async def reconcile_table(
    pair: TablePair,
    transform: Any,
    options: ReconcileOptions,
    clock: Clock,
    repair: Repairer | None,
    progress: Progress | None = None,
) -> TableReport:
    started = clock.monotonic()
    src_kinds = [next(c.type for c in pair.schema.columns if c.name == k) for k in pair.source.key]
    src = Reader(pair.source, src_kinds, rate=options.rate, clock=clock, whole_rows=True)
    dst = Reader(pair.dest, pair.key_kinds, rate=options.rate, clock=clock)
    lineup = Lineup(pair, transform)
    counted = None
    if progress is not None and progress.mode != "off":
        progress.add(pair.entity, await src.estimate())
        counted = partial(progress.advance, pair.entity)
    try:
        walk = await Walker(lineup, src, dst, options, counted).run()
        if progress is not None:
            progress.advance(pair.entity, 0, done=True)
        result = await settle(
            lineup,
            src,
            dst,
            walk.suspects,
            batch=options.confirm_batch,
            max_listed=options.max_listed,
            now=clock.time,
            repair=repair,
        )
        result.unmappable += len(walk.unmappable)
    finally:
        await src.close()
        await dst.close()
    report = TableReport(
        entity=pair.entity,
        source=pair.source.label,
        dest=pair.dest.label,
        mode=pair.mode,
        why_python=pair.why_python,
        chunks=walk.chunks,
        chunks_differing=walk.chunks_differing,
        leaves=walk.leaves,
        suspects=len(walk.suspects),
        result=result,
        source_counters=src.counters,
        dest_counters=dst.counters,
        top_hashed=walk.top_hashed,
        seconds=clock.monotonic() - started,
        warnings=pair.warnings,
    )
    log.info(
        "reconcile %s: %d missing, %d extra, %d different (%d settled on re-read) in %.1fs",
        pair.entity,
        result.missing,
        result.extra,
        result.different,
        result.settled,
        report.seconds,
    )
    return report
