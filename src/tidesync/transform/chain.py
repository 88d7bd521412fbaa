"""Compiled transforms: :func:`compile_transforms` and :class:`Transform`.

Steps are prepared once (expressions compiled, functions imported, plugins
built). The chain for an entity, the steps whose ``entity:`` scope matches it
with consecutive row-level steps fused into one pass, is built on first sight
of the entity and cached.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tidesync.errors import ConfigError, TransformError
from tidesync.event import TRUNCATE, ChangeEvent
from tidesync.registry import REGISTRY
from tidesync.schema import EntitySchema
from tidesync.transform import schema_map
from tidesync.transform.casts import CONVERTERS
from tidesync.transform.config import (
    CastStep,
    ComputeStep,
    DropStep,
    FilterStep,
    FunctionStep,
    PluginStep,
    RenameStep,
    SelectStep,
    SetStep,
    StepConfig,
    parse_steps,
    resolve_function,
)
from tidesync.transform.expr import Expression, compile_expression
from tidesync.transform.plan import ColumnPlan
from tidesync.transform.stages import (
    CastOp,
    ComputeOp,
    InPlaceOp,
    SetOp,
    Stage,
    filter_stage,
    function_stage,
    row_stage,
)

Chain = Callable[[ChangeEvent], ChangeEvent | None]


class _Unseen(enum.Enum):
    """Sentinel for "no chain built yet" (a chain may itself be None): an enum, so the checker narrows on ``is``."""

    UNSEEN = enum.auto()


_UNSEEN: Final = _Unseen.UNSEEN


@dataclass(frozen=True, slots=True)
class Prepared:
    """A step with what its config needs at run time: compiled expressions or the user callable."""

    config: StepConfig
    exprs: tuple[tuple[str, Expression], ...] = ()
    fn: Callable[[ChangeEvent], Any] | None = None
    label: str = ""


def _prepare(index: int, step: StepConfig) -> Prepared:
    if isinstance(step, ComputeStep):
        return Prepared(step, tuple((name, compile_expression(src)) for name, src in step.compute.items()))
    if isinstance(step, FilterStep):
        return Prepared(step, (("", compile_expression(step.filter.when)),))
    if isinstance(step, FunctionStep):
        return Prepared(step, fn=resolve_function(step.function), label=f"function {step.function}")
    if isinstance(step, PluginStep):
        try:
            fn = REGISTRY.get("transform", step.type).build(step.options)
        except Exception as exc:
            raise ConfigError(f"transforms[{index}] ({step.type}): cannot build: {exc}") from exc
        if not callable(fn):
            raise ConfigError(
                f"transforms[{index}] ({step.type}): the plugin built {type(fn).__name__}, not a function"
            )
        return Prepared(step, fn=fn, label=step.type)
    return Prepared(step)


def _fuse(steps: Sequence[Prepared]) -> list[Stage]:
    """Stages for a list of steps: runs of row-level steps become one row stage each."""
    stages: list[Stage] = []
    plan = ColumnPlan()
    ops: list[InPlaceOp] = []
    row_stage_before = False

    def flush() -> None:
        nonlocal plan, ops, row_stage_before
        if not plan.empty or ops:
            stages.append(row_stage(plan.compile(), ops))
            row_stage_before = True
        plan, ops = ColumnPlan(), []

    for p in steps:
        c = p.config
        if isinstance(c, RenameStep | SelectStep | DropStep):
            if ops:  # a structural step after in-place ones starts a new pass
                flush()
            if isinstance(c, RenameStep):
                plan.rename(c.rename)
            elif isinstance(c, SelectStep):
                plan.select(c.select)
            else:
                plan.drop(c.drop)
        elif isinstance(c, CastStep):
            for name, type_ in c.cast.items():
                if ops:
                    ops.append(CastOp(name, CONVERTERS[type_], name))
                else:
                    plan.cast(name, CONVERTERS[type_], name)
        elif isinstance(c, SetStep):
            mutable = any(isinstance(v, dict | list) for v in c.set.values())
            ops.append(SetOp(tuple(c.set.items()), mutable))
        elif isinstance(c, ComputeStep):
            ops.extend(ComputeOp(name, expr) for name, expr in p.exprs)
        else:
            flush()
            if isinstance(c, FilterStep):
                stages.append(filter_stage(p.exprs[0][1], c.filter.on_exit))
            else:
                assert p.fn is not None
                stages.append(function_stage(p.fn, p.label, copy_rows=not row_stage_before))
    flush()
    return stages


def _chain(stages: list[Stage]) -> Chain | None:
    if not stages:
        return None
    if len(stages) == 1:
        return stages[0]
    all_stages = tuple(stages)

    def chain(e: ChangeEvent) -> ChangeEvent | None:
        for stage in all_stages:
            out = stage(e)
            if out is None:
                return None
            e = out
        return e

    return chain


class Transform:
    """The compiled ``transforms:`` of a pipeline.

    ``apply(events)`` returns the transformed events in order (filtered ones
    removed) and the failures: each the original event, unchanged, with a
    reason naming the step, the field and the value. Every input event ends
    up in exactly one of: the output, the failures, or the ``filtered`` count.
    Truncate events pass untouched. Not thread-safe (one pipeline task uses it).
    """

    def __init__(self, steps: Sequence[Prepared]) -> None:
        self.steps = tuple(steps)
        self.filtered = 0  # events a filter (or a function returning None) removed
        self.failed = 0  # events reported as failures
        self._chains: dict[str, Chain | None] = {}

    def chain_for(self, entity: str) -> Chain | None:
        """The compiled chain for ``entity``, None if no step applies to it (cached)."""
        chain = self._chains.get(entity, _UNSEEN)
        if chain is _UNSEEN:
            chain = _chain(_fuse([p for p in self.steps if p.config.applies_to(entity)]))
            self._chains[entity] = chain
        return chain

    def apply(self, events: Iterable[ChangeEvent]) -> tuple[list[ChangeEvent], list[tuple[ChangeEvent, str]]]:
        out: list[ChangeEvent] = []
        failures: list[tuple[ChangeEvent, str]] = []
        append = out.append
        chains = self._chains
        filtered = 0
        for e in events:
            chain = chains.get(e.entity, _UNSEEN)
            if chain is _UNSEEN:
                chain = self.chain_for(e.entity)
            if chain is None or e.op == TRUNCATE:
                append(e)
                continue
            try:
                result = chain(e)
            except TransformError as exc:
                failures.append((e, str(exc)))
                continue
            except Exception as exc:  # a bug must not lose the event either
                failures.append((e, f"unexpected {type(exc).__name__}: {exc}"))
                continue
            if result is None:
                filtered += 1
            else:
                append(result)
        self.filtered += filtered
        self.failed += len(failures)
        return out, failures

    def __call__(self, event: ChangeEvent) -> ChangeEvent | None:
        """One event: the result, None if filtered out; raises :class:`TransformError`. Counts nothing."""
        chain = self.chain_for(event.entity)
        if chain is None or event.op == TRUNCATE:
            return event
        try:
            return chain(event)
        except TransformError:
            raise
        except Exception as exc:
            raise TransformError(f"unexpected {type(exc).__name__}: {exc}") from exc

    def map_schema(self, schema: EntitySchema) -> EntitySchema:
        """The shape of ``schema.entity`` after the steps that apply to it."""
        for p in self.steps:
            if p.config.applies_to(schema.entity):
                schema = schema_map.apply_step(schema, p.config, p.fn)
        return schema


def compile_transforms(steps: Sequence[StepConfig | Mapping[str, Any]]) -> Transform:
    """Compile validated steps (or raw config items, validated here) into a :class:`Transform`.

    Raises ``pydantic.ValidationError`` for raw items that are invalid, and
    :class:`~tidesync.errors.ConfigError` when a registered plugin cannot be built.
    """
    raw = list(steps)
    configs = [s for s in raw if isinstance(s, StepConfig)]
    if len(configs) < len(raw):
        configs = parse_steps(raw)
    return Transform([_prepare(i, s) for i, s in enumerate(configs)])
