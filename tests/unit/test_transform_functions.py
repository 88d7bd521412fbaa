"""User code as steps: ``function: module:callable`` and transforms registered in the registry."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from tidesync.errors import ConfigError
from tidesync.event import ChangeEvent
from tidesync.registry import REGISTRY, Plugin
from tidesync.schema import Column, EntitySchema
from tidesync.transform import compile_transforms, parse_steps


def upper_email(e: ChangeEvent) -> ChangeEvent:
    assert e.after is not None
    return e.replace(after={**e.after, "email": e.after["email"].upper()})


def drop_test_rows(e: ChangeEvent) -> ChangeEvent | None:
    return None if (e.after or {}).get("test") else e


def reject_gmail(e: ChangeEvent) -> ChangeEvent:
    raise ValueError(f"gmail not accepted: {(e.after or {}).get('email')}")


def returns_dict(e: ChangeEvent) -> Any:
    return dict(e.after or {})


def mutates_then_raises(e: ChangeEvent) -> ChangeEvent:
    assert e.after is not None
    e.after["email"] = "scribbled"
    raise RuntimeError("boom")


def with_schema(e: ChangeEvent) -> ChangeEvent:
    return e.replace(after={**(e.after or {}), "tier": "gold"})


with_schema.map_schema = lambda s: EntitySchema(s.entity, (*s.columns, Column("tier", "string")), s.primary_key)  # type: ignore[attr-defined]


async def not_plain(e: ChangeEvent) -> ChangeEvent:
    return e


@pytest.fixture(autouse=True)
def user_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("tidesync_test_user_fns")
    for fn in (upper_email, drop_test_rows, reject_gmail, returns_dict, mutates_then_raises, with_schema, not_plain):
        setattr(module, fn.__name__, fn)
    monkeypatch.setitem(sys.modules, module.__name__, module)


def ev(after: dict[str, Any], key: int = 1) -> ChangeEvent:
    return ChangeEvent("public.customers", (key,), "insert", after=after)


def test_function_step_transforms_and_drops() -> None:
    transform = compile_transforms(
        [{"function": "tidesync_test_user_fns:upper_email"}, {"function": "tidesync_test_user_fns:drop_test_rows"}]
    )
    out, failures = transform.apply([ev({"email": "a@x"}), ev({"email": "b@x", "test": True}, 2)])
    assert [e.after for e in out] == [{"email": "A@X"}]
    assert failures == []
    assert transform.filtered == 1


def test_function_exception_is_a_failure_with_its_message() -> None:
    transform = compile_transforms([{"function": "tidesync_test_user_fns:reject_gmail"}])
    event = ev({"email": "a@gmail.com"})
    out, failures = transform.apply([event])
    assert out == []
    assert failures == [
        (event, "function tidesync_test_user_fns:reject_gmail: ValueError: gmail not accepted: a@gmail.com")
    ]


def test_function_returning_something_else_is_a_failure() -> None:
    transform = compile_transforms([{"function": "tidesync_test_user_fns:returns_dict"}])
    _, failures = transform.apply([ev({"a": 1})])
    assert (
        failures[0][1] == "function tidesync_test_user_fns:returns_dict returned dict, expected a ChangeEvent or None"
    )


def test_function_that_mutates_its_argument_cannot_corrupt_the_reported_original() -> None:
    transform = compile_transforms([{"function": "tidesync_test_user_fns:mutates_then_raises"}])
    event = ev({"email": "a@x"})
    _, failures = transform.apply([event])
    assert failures[0][0] is event
    assert event.after == {"email": "a@x"}


def test_coroutine_function_rejected_at_config_time() -> None:
    with pytest.raises(ValidationError, match="is a coroutine function"):
        parse_steps([{"function": "tidesync_test_user_fns:not_plain"}])


def test_function_declares_its_schema_change() -> None:
    transform = compile_transforms([{"function": "tidesync_test_user_fns:with_schema"}, {"rename": {"id": "pk"}}])
    schema = EntitySchema("public.customers", (Column("id", "int64"),), ("id",))
    assert transform.map_schema(schema) == EntitySchema(
        "public.customers", (Column("pk", "int64"), Column("tier", "string")), ("pk",)
    )


# --- registered plugins -----------------------------------------------------------------


class PrefixOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    field: str
    prefix: str


def build_prefix(options: PrefixOptions) -> Any:
    def prefix(e: ChangeEvent) -> ChangeEvent:
        after = dict(e.after or {})
        if after.get(options.field) is None:
            raise ValueError(f"no {options.field}")
        after[options.field] = options.prefix + str(after[options.field])
        return e.replace(after=after)

    return prefix


def build_broken(options: PrefixOptions) -> Any:
    raise RuntimeError("cannot reach the lookup service")


@pytest.fixture
def plugins() -> Iterator[None]:
    REGISTRY.register(Plugin("transform", "prefix", PrefixOptions, build_prefix))
    REGISTRY.register(Plugin("transform", "broken", PrefixOptions, build_broken))
    yield
    REGISTRY.unregister("transform", "prefix")
    REGISTRY.unregister("transform", "broken")


def test_registered_plugin_runs_like_a_function_step(plugins: None) -> None:
    steps = [{"prefix": {"field": "sku", "prefix": "ACME-"}, "entity": "shop.*"}, {"rename": {"sku": "code"}}]
    transform = compile_transforms(steps)
    shop = ChangeEvent("shop.items", (1,), "insert", after={"sku": 7})
    other = ChangeEvent("crm.items", (1,), "insert", after={"sku": 7})
    missing = ChangeEvent("shop.items", (2,), "insert", after={"name": "x"})
    out, failures = transform.apply([shop, other, missing])
    assert [e.after for e in out] == [{"code": "ACME-7"}, {"code": 7}]
    assert failures == [(missing, "prefix: ValueError: no sku")]


def test_plugin_that_cannot_be_built_is_a_config_error(plugins: None) -> None:
    with pytest.raises(ConfigError, match=r"transforms\[1\] \(broken\): cannot build: cannot reach the lookup service"):
        compile_transforms([{"drop": ["x"]}, {"broken": {"field": "a", "prefix": "b"}}])
