"""Config models of the transform steps, and :func:`parse_steps`.

A pipeline's ``transforms:`` is a list; each item has exactly one step key
plus an optional ``entity:`` (a name or list of names, ``fnmatch`` globs such as
``public.*``) limiting the entities the step applies to::

    transforms:
      - rename: {email: email_address}
      - cast: {phone: string, score: decimal}
      - filter: "status != 'deleted'"
        entity: public.customers
      - filter: {when: "plan == 'pro'", on_exit: keep}

Step keys are the built-ins below, or a transform registered in
:data:`tidesync.registry.REGISTRY` (kind ``transform``), whose config model
validates the mapping under its key. Built-in names take precedence.

Validation errors are pydantic ``ValidationError`` whose ``loc`` is
``(index, step key, field...)`` (``(1, 'cast', 'score')``), so the config loader
maps them to a YAML line. :data:`TransformSteps` is the annotated list type for
a larger config model; ``loc`` then continues from the enclosing field.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import inspect
from collections.abc import Callable
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from tidesync.registry import REGISTRY
from tidesync.transform.casts import CastType
from tidesync.transform.expr import ExpressionError, compile_expression

Name = Annotated[str, Field(min_length=1)]


def _scope_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# One name or a list of names; stored as a list.
EntityScope = Annotated[list[Name] | None, BeforeValidator(_scope_list)]


def _check_expression(source: str) -> str:
    try:
        compile_expression(source)
    except ExpressionError as exc:
        raise PydanticCustomError("expression", str(exc)) from None
    return source


def resolve_function(ref: str) -> Callable[..., Any]:
    """Import ``module:attribute`` and return the callable; raises ValueError saying why not."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {ref!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way; the message is what matters
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{ref!r} is not callable")
    if inspect.iscoroutinefunction(obj):
        raise ValueError(f"{ref!r} is a coroutine function; a transform function must be a plain function")
    return obj


def _check_function_ref(ref: str) -> str:
    try:
        resolve_function(ref)
    except ValueError as exc:
        raise PydanticCustomError("function_ref", str(exc)) from None
    return ref


def _check_constant(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | Decimal | dt.date | dt.time | dict | list):
        return value
    raise PydanticCustomError(
        "constant", f"a constant must be a string, number, bool, date or JSON value, got {type(value).__name__}"
    )


Expr = Annotated[str, AfterValidator(_check_expression)]
FunctionRef = Annotated[str, AfterValidator(_check_function_ref)]
Constant = Annotated[Any, AfterValidator(_check_constant)]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    KEY: ClassVar[str]

    entity: EntityScope = None

    def applies_to(self, entity: str) -> bool:
        """True when this step's ``entity:`` scope matches ``entity`` (no scope: every entity)."""
        if self.entity is None:
            return True
        return any(fnmatchcase(entity, p) for p in self.entity)


class RenameStep(_Step):
    """``rename: {old: new}``: renames are simultaneous (``{a: b, b: a}`` swaps); a field already
    named ``new`` is replaced by the renamed one."""

    KEY: ClassVar[str] = "rename"
    rename: Annotated[dict[Name, Name], Field(min_length=1)]

    @field_validator("rename")
    @classmethod
    def _unique_targets(cls, mapping: dict[str, str]) -> dict[str, str]:
        targets = [t for s, t in mapping.items() if s != t]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise PydanticCustomError("rename_target", f"several fields renamed to {', '.join(dupes)}")
        return mapping


class SelectStep(_Step):
    """``select: [a, b]``: keep only these fields, in this order."""

    KEY: ClassVar[str] = "select"
    select: Annotated[list[Name], Field(min_length=1)]


class DropStep(_Step):
    """``drop: [a, b]``: remove these fields."""

    KEY: ClassVar[str] = "drop"
    drop: Annotated[list[Name], Field(min_length=1)]


class CastStep(_Step):
    """``cast: {field: type}``: explicit conversions (see :mod:`tidesync.transform.casts`)."""

    KEY: ClassVar[str] = "cast"
    cast: Annotated[dict[Name, CastType], Field(min_length=1)]


class SetStep(_Step):
    """``set: {field: constant}``: add or overwrite fields with constants."""

    KEY: ClassVar[str] = "set"
    set: Annotated[dict[Name, Constant], Field(min_length=1)]


class ComputeStep(_Step):
    """``compute: {field: expression}``: add or overwrite fields with computed values."""

    KEY: ClassVar[str] = "compute"
    compute: Annotated[dict[Name, Expr], Field(min_length=1)]


class FilterSpec(BaseModel):
    """``filter: {when: expression, on_exit: delete | keep}``.

    ``when``: the records the destination holds. ``on_exit``: what happens to a
    record in the destination when an update makes it stop matching: ``delete``
    (the default) turns that update into a delete of its key, so the
    destination holds exactly the matching records; ``keep`` leaves the last
    matching version there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: Expr
    on_exit: Literal["delete", "keep"] = "delete"


def _filter_shorthand(value: Any) -> Any:
    # ``filter: "expr"`` is ``filter: {when: "expr"}``; checked here so its error stays at ``filter``.
    if isinstance(value, str):
        return FilterSpec(when=_check_expression(value))
    return value


class FilterStep(_Step):
    """``filter: expression`` or ``filter: {when: expression, on_exit: delete | keep}``
    (see :class:`FilterSpec` and :func:`tidesync.transform.stages.filter_stage`)."""

    KEY: ClassVar[str] = "filter"
    filter: Annotated[FilterSpec, BeforeValidator(_filter_shorthand)]


class FunctionStep(_Step):
    """``function: module:callable``: a plain function ``(ChangeEvent) -> ChangeEvent | None``."""

    KEY: ClassVar[str] = "function"
    function: FunctionRef


class PluginStep(_Step):
    """A transform from the registry: ``options`` is an instance of the plugin's config model."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    KEY: ClassVar[str] = "plugin"
    type: str
    options: BaseModel


BUILTIN_STEPS: dict[str, type[_Step]] = {
    m.KEY: m for m in (RenameStep, SelectStep, DropStep, CastStep, SetStep, ComputeStep, FilterStep, FunctionStep)
}
StepConfig = (
    RenameStep | SelectStep | DropStep | CastStep | SetStep | ComputeStep | FilterStep | FunctionStep | PluginStep
)


def known_step_types() -> list[str]:
    return sorted({*BUILTIN_STEPS, *REGISTRY.names("transform")})


def _error(loc: tuple[str | int, ...], kind: str, message: str, value: Any) -> ValidationError:
    detail = InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)
    return ValidationError.from_exception_data("transform step", [detail])


@functools.cache
def _plugin_wrapper(key: str, model: type[BaseModel]) -> type[BaseModel]:
    # Validating {key: options} through a wrapper gives the same loc shape as the built-ins.
    return create_model(
        f"{model.__name__}Step",
        __config__=ConfigDict(extra="forbid"),
        options=(model, Field(alias=key)),
        entity=(EntityScope, None),
    )


def _validate_step(value: Any) -> _Step:
    # Typed as the base: every _Step subclass is one of StepConfig's members (pydantic checks the
    # annotation of TransformSteps, not this function's).
    if isinstance(value, _Step):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "transform_step",
            f"a transform step is a mapping with one step key (e.g. rename: {{a: b}}), got {type(value).__name__}",
        )
    keys = [k for k in value if k != "entity"]
    if len(keys) != 1:
        found = ", ".join(map(str, keys)) or "none"
        raise PydanticCustomError(
            "transform_step",
            f"a transform step has exactly one step key ({', '.join(known_step_types())}); found: {found}",
        )
    key = keys[0]
    builtin = BUILTIN_STEPS.get(key)
    if builtin is not None:
        return builtin.model_validate(value)
    if not isinstance(key, str) or key not in REGISTRY.names("transform"):
        raise _error(
            (key,),
            "unknown_step",
            f"unknown transform step {key!r}; known step types: " + ", ".join(known_step_types()),
            value[key],
        )
    model: type[BaseModel] = REGISTRY.get("transform", key).model()
    options = value[key] if value[key] is not None else {}
    if isinstance(options, dict) and "type" in model.model_fields and "type" not in options:
        options = {**options, "type": key}
    checked = _plugin_wrapper(key, model).model_validate({key: options, "entity": value.get("entity")})
    # pydantic types create_model's result as a bare BaseModel, without the fields it was made with
    return PluginStep(type=key, options=checked.options, entity=checked.entity)  # type: ignore[attr-defined]


TransformSteps = list[Annotated[StepConfig, PlainValidator(_validate_step, json_schema_input_type=dict[str, Any])]]
_STEPS = TypeAdapter(TransformSteps)


def parse_steps(raw: list[Any]) -> list[StepConfig]:
    """Validate a ``transforms:`` list; raises pydantic ``ValidationError`` (every error, located)."""
    return _STEPS.validate_python(raw)
