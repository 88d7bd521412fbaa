"""From a loaded config (or from code) to running objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from tidesync.config import LoadedConfig, PipelineSpec
from tidesync.engine.breaker import CircuitBreaker
from tidesync.engine.engine import Engine
from tidesync.engine.lease import LeaseSettings
from tidesync.engine.runner import BatchPolicy, PipelineRunner
from tidesync.engine.schedule import CronSchedule
from tidesync.protocols import Sink, Source
from tidesync.registry import REGISTRY
from tidesync.retry import RetryPolicy
from tidesync.state import open_state_store
from tidesync.state.store import StateStore

if TYPE_CHECKING:
    from tidesync.transform.chain import Transform


def build_transform(steps: Sequence[Any]) -> Transform | None:
    if not steps:
        return None
    from tidesync.transform import compile_transforms

    return compile_transforms(list(steps))


def build_source(spec: PipelineSpec) -> Source:
    """The spec's source, built by its plugin (whose factory returns a :class:`Source`: the conformance suite
    holds every registered one to that contract)."""
    return cast(Source, REGISTRY.get("source", spec.source.type).build(spec.source))  # type: ignore[attr-defined]


def build_sink(spec: PipelineSpec) -> Sink:
    """The spec's sink, built by its plugin (a :class:`Sink`, as the conformance suite checks)."""
    return cast(Sink, REGISTRY.get("sink", spec.sink.type).build(spec.sink))  # type: ignore[attr-defined]


def build_runner(spec: PipelineSpec, state: StateStore, source: Any = None, *, once: bool = False) -> PipelineRunner:
    """``source``: instead of building the spec's own (a fan-out lane). ``once``: one batch run (no schedule)."""
    cfg = spec.config
    return PipelineRunner(
        cfg.name,
        source if source is not None else build_source(spec),
        build_sink(spec),
        state,
        transform=build_transform(spec.transforms),
        batch=BatchPolicy(cfg.batch.max_events, cfg.batch.max_wait_ms / 1000),
        retry=RetryPolicy.from_config(cfg.retry),
        queue_batches=cfg.queue_batches,
        breaker=CircuitBreaker(cfg.breaker.events, cfg.breaker.seconds),
        probe=RetryPolicy(initial_delay=cfg.probe.initial_delay, max_delay=cfg.probe.max_delay),
        schema_changes=cfg.schema_changes,
        once=once,
        schedule=CronSchedule(cfg.schedule) if cfg.schedule is not None and not once else None,
    )


def build_runners(
    config: LoadedConfig, specs: Sequence[PipelineSpec], state: StateStore, *, once: bool = False
) -> list[PipelineRunner]:
    """A runner per spec; the sinks of one fan-out pipeline share one hub over its source."""
    from tidesync.engine.fanout import FanoutHub

    hubs: dict[str, FanoutHub] = {}
    runners = []
    for spec in specs:
        if spec.fanout is None:
            runners.append(build_runner(spec, state, once=once))
            continue
        hub = hubs.get(spec.fanout)
        if hub is None:
            # Every sink of the pipeline, enabled and chosen or not, holds the source's checkpoint: a lane not
            # run now counts as one that never opened (at the hub's checkpoint).
            lanes = [p.name for p in config.pipelines if p.fanout == spec.fanout]
            cfg = spec.config
            hub = hubs[spec.fanout] = FanoutHub(
                spec.fanout,
                build_source(spec),
                state,
                lanes,
                buffer=cfg.queue_batches,
                max_events=cfg.batch.max_events,
                max_wait=cfg.batch.max_wait_ms / 1000,
            )
        runners.append(build_runner(spec, state, hub.lane(spec.name), once=once))
    for hub in hubs.values():
        hub.expect([r.name for r in runners if r.name in hub.lanes])
    return runners


def build_engine(config: LoadedConfig, only: Sequence[str] | None = None, *, once: bool = False) -> Engine:
    """``only`` names pipelines and syncs to run (default: every enabled one).

    ``once``: every pipeline makes one batch run (:mod:`.once`); two-way syncs,
    which have no end to read up to, are left out.
    """
    state = open_state_store(config.state_url)
    specs = [p for p in config.pipelines if p.config.enabled and (not only or p.name in only)]
    syncs = [s for s in config.syncs if s.config.enabled and (not only or s.name in only) and not once]
    lease = LeaseSettings(config.model.lease.ttl_seconds) if config.model.lease is not None else None
    names: dict[str, str] = {}
    balancer = None
    if config.model.cluster is not None and lease is not None and not once:
        from tidesync.engine.balance import Balancer
        from tidesync.engine.cluster import plan
        from tidesync.engine.lease import process_owner

        works = plan(config.model.cluster, specs)
        runners = [build_runner(w.spec, state) for w in works]
        names = {w.spec.name: w.lease for w in works}
        applies = sum(1 for w in works if w.role == "apply")
        balancer = Balancer(state, process_owner(), applies, lease.ttl, lease.poll_every)
    else:
        runners = build_runners(config, specs, state, once=once)
    built = []
    if syncs:
        from tidesync.sync.build import build_sync

        built = [build_sync(s, state) for s in syncs]
    return Engine(state, runners, built, lease=lease, lease_names=names, balancer=balancer)
