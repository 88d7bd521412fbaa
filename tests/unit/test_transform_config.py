"""``parse_steps``: the step models, and errors located (index, step key, field) for the YAML line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from tidesync.registry import REGISTRY, Plugin
from tidesync.transform import (
    CastStep,
    ComputeStep,
    DropStep,
    FilterStep,
    FunctionStep,
    PluginStep,
    RenameStep,
    SelectStep,
    SetStep,
    TransformSteps,
    parse_steps,
)


def errors(raw: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        parse_steps(raw)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


class MaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    field: str
    keep: int = 2


def build_mask(options: MaskOptions) -> Any:
    return lambda e: e


@pytest.fixture
def mask_plugin() -> Iterator[None]:
    REGISTRY.register(Plugin("transform", "mask", MaskOptions, build_mask, "mask a field"))
    yield
    REGISTRY.unregister("transform", "mask")


def test_every_builtin_step_parses_into_its_model() -> None:
    steps = parse_steps(
        [
            {"rename": {"email": "email_address"}},
            {"select": ["id", "email_address"]},
            {"drop": ["internal_notes"]},
            {"cast": {"phone": "string", "created": "epoch_ms"}},
            {"set": {"source_system": "crm", "n": 1, "ok": True, "none": None}},
            {"compute": {"full_name": "first_name + ' ' + last_name"}},
            {"filter": "status != 'deleted'", "entity": "public.customers"},
            {"function": "tidesync.event:diff_fields"},
        ]
    )
    assert [type(s) for s in steps] == [
        RenameStep,
        SelectStep,
        DropStep,
        CastStep,
        SetStep,
        ComputeStep,
        FilterStep,
        FunctionStep,
    ]
    assert steps[0].rename == {"email": "email_address"}  # type: ignore[union-attr]
    assert steps[6].entity == ["public.customers"]
    assert steps[0].entity is None


def test_entity_scope_accepts_name_list_and_glob() -> None:
    (step,) = parse_steps([{"drop": ["x"], "entity": ["public.*", "crm.deals"]}])
    assert step.applies_to("public.orders")
    assert step.applies_to("crm.deals")
    assert not step.applies_to("crm.contacts")


def test_loc_points_at_index_step_and_field() -> None:
    raw = [{"rename": {"a": "b"}}, {"cast": {"score": "decimall"}}]
    ((loc, msg),) = errors(raw)
    assert loc == (1, "cast", "score")
    assert "'decimal'" in msg and "'epoch_ms'" in msg


def test_all_errors_reported_at_once() -> None:
    raw = [{"select": []}, {"cast": {"a": "int"}}, {"compute": {"x": "a.b"}}, {"drop": ["x"], "extra": 1}]
    found = errors(raw)
    assert [loc for loc, _ in found] == [(0, "select"), (2, "compute", "x"), (3,)]
    assert "attribute access '.b' is not allowed" in found[1][1]
    assert "exactly one step key" in found[2][1] and "found: drop, extra" in found[2][1]


def test_unknown_step_lists_builtins_and_registered(mask_plugin: None) -> None:
    ((loc, msg),) = errors([{"renme": {"a": "b"}}])
    assert loc == (0, "renme")
    assert msg == (
        "unknown transform step 'renme'; known step types: "
        "cast, compute, drop, filter, function, mask, rename, select, set"
    )


def test_step_shape_errors() -> None:
    assert errors(["rename"]) == [
        ((0,), "a transform step is a mapping with one step key (e.g. rename: {a: b}), got str")
    ]
    ((loc, msg),) = errors([{"entity": "x"}])
    assert loc == (0,) and "found: none" in msg
    ((loc, msg),) = errors([{"rename": {"a": "b"}, "cast": {"a": "int"}}])
    assert loc == (0,) and "found: rename, cast" in msg
    ((loc, _),) = errors({"rename": {"a": "b"}})
    assert loc == ()


@pytest.mark.parametrize(
    ("raw", "loc", "fragment"),
    [
        ({"rename": {"a": "c", "b": "c"}}, (0, "rename"), "several fields renamed to c"),
        ({"rename": {}}, (0, "rename"), "at least 1 item"),
        ({"rename": {"a": ""}}, (0, "rename", "a"), "at least 1 character"),
        ({"select": "id"}, (0, "select"), "valid list"),
        ({"drop": []}, (0, "drop"), "at least 1 item"),
        ({"set": {"x": object()}}, (0, "set", "x"), "a constant must be"),
        ({"filter": "a +"}, (0, "filter"), "invalid expression"),
        ({"filter": "now_utc() > 1"}, (0, "filter"), "transforms must be deterministic"),
        ({"function": "no_colon"}, (0, "function"), "expected 'module:function'"),
        ({"function": "tidesync_no_such_module:fn"}, (0, "function"), "cannot import 'tidesync_no_such_module'"),
        ({"function": "tidesync.event:nope"}, (0, "function"), "has no attribute 'nope'"),
        ({"function": "tidesync.event:INSERT"}, (0, "function"), "is not callable"),
        ({"drop": ["x"], "entity": ""}, (0, "entity", 0), "at least 1 character"),
        ({"drop": ["x"], "entity": 5}, (0, "entity"), "valid list"),
    ],
)
def test_field_errors_are_located(raw: dict[str, Any], loc: tuple[Any, ...], fragment: str) -> None:
    found = errors([raw])
    assert found[0][0] == loc
    assert fragment in found[0][1]


def test_registered_plugin_options_validated_by_its_model(mask_plugin: None) -> None:
    (step,) = parse_steps([{"mask": {"field": "email"}, "entity": "public.*"}])
    assert isinstance(step, PluginStep)
    assert step.type == "mask"
    assert step.options == MaskOptions(type="mask", field="email")
    assert step.entity == ["public.*"]
    found = errors([{"drop": ["x"]}, {"mask": {"field": "email", "keep": "many", "colour": 1}}])
    assert found[0][0] == (1, "mask", "keep")
    assert found[1] == ((1, "mask", "colour"), "Extra inputs are not permitted")


def test_steps_nest_in_a_larger_config_model() -> None:
    class Pipeline(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        transforms: TransformSteps = []

    ok = Pipeline.model_validate({"name": "p", "transforms": [{"drop": ["x"]}]})
    assert isinstance(ok.transforms[0], DropStep)
    with pytest.raises(ValidationError) as info:
        Pipeline.model_validate({"name": "p", "transforms": [{"drop": ["x"]}, {"cast": {"a": "nope"}}]})
    assert info.value.errors()[0]["loc"] == ("transforms", 1, "cast", "a")


def test_parsed_steps_pass_through_validation_again() -> None:
    steps = parse_steps([{"drop": ["x"]}])
    assert parse_steps(steps) == steps
