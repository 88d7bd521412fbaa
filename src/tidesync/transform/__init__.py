"""The transform layer: field mapping compiled from config into pure functions.

::

    steps = parse_steps(config["transforms"])      # pydantic ValidationError, loc = (index, step, field)
    transform = compile_transforms(steps)
    events, failures = transform.apply(batch.events)   # failures: (original event, reason)
    sink_schema = transform.map_schema(source_schema)

Steps (each list item has one step key and an optional ``entity:`` scope):
``rename``, ``select``, ``drop``, ``cast`` (:mod:`.casts`), ``set``,
``compute`` and ``filter`` (:mod:`.expr`), ``function`` (a plain Python
function ``(ChangeEvent) -> ChangeEvent | None``) and any transform in the
registry. Steps apply to both row images (``after`` and ``before``) and to
``changed``; ``key`` never changes. A field absent from an update's ``after``
is unknown, not NULL: casts and computations never invent it. Only ``after``
can make an event fail; ``before`` is transformed best-effort. A ``filter``
is the edge of what the destination holds: an update crossing it becomes a
delete (``on_exit: delete``, the default) or an insert of the whole row.
"""

from tidesync.transform.chain import Transform, compile_transforms
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
    TransformSteps,
    known_step_types,
    parse_steps,
)

__all__ = [
    "CastStep",
    "ComputeStep",
    "DropStep",
    "FilterStep",
    "FunctionStep",
    "PluginStep",
    "RenameStep",
    "SelectStep",
    "SetStep",
    "StepConfig",
    "Transform",
    "TransformSteps",
    "compile_transforms",
    "known_step_types",
    "parse_steps",
]
