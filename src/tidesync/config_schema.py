"""A JSON Schema (draft 2020-12) of the whole config, built from the config models and the registry.

``tidesync schema > tidesync.schema.json`` writes it; editors that read the
``# yaml-language-server: $schema=...`` modeline then complete and check every
key (docs/schema.md).

The config models keep a connector's keys as a plain mapping (``source:``,
``sink:``, a hybrid source's ``primary:``) and validate it later by its
``type:``. Here each such place becomes a discriminated union: one branch per
registered type name, each branch the connector's own model with ``type`` fixed
to that name (``oneOf`` plus the OpenAPI ``discriminator`` annotation, as
pydantic writes its own tagged unions). Transform steps are a union of the
step models, told apart by their one step key.

What the schema cannot see, and how it is approximated:

- A before-validator in the config models turns a shorthand into the full
  value; every such shorthand is a string (``tables: [orders]``,
  ``poll_interval: 30s``, ``filter: "a > 1"``), so a field with one also
  accepts a string.
- A secret (``Secret``) is a string or a list of strings.
- ``${env:NAME}`` / ``${file:path}`` references are replaced before validation;
  where one stands for a number or a flag the schema reports a type error that
  loading would not. The loader stays the judge: the schema is for editors.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from tidesync.registry import REGISTRY, Kind

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://tidesync.dev/schema/tidesync.schema.json"
_STRING: JsonSchemaValue = {"type": "string"}
_SECRET: JsonSchemaValue = {
    "anyOf": [_STRING, {"type": "array", "items": _STRING}],
    "description": "a secret: a value or a ${env:NAME} / ${file:path} reference (a list during a rotation)",
}


class _ConfigJsonSchema(GenerateJsonSchema):
    """Pydantic's generator, told about the config models' shorthands and secrets."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        if "json_schema_input_schema" in schema:
            return inner
        if inner.get("type") == "string":  # a name with a mapping form: {prefer: a} for prefer:a
            return {"anyOf": [inner, {"type": "object"}]}
        return {"anyOf": [inner, _STRING]}

    def function_plain_schema(self, schema: core_schema.PlainValidatorFunctionSchema) -> JsonSchemaValue:
        if "json_schema_input_schema" in schema:
            return super().function_plain_schema(schema)
        function = schema["function"]["function"]
        if getattr(function, "__qualname__", "").startswith("Secret."):
            return dict(_SECRET)
        return {}  # validated by code only: any value here, the loader's message otherwise


def _plugins(kind: Kind) -> list[tuple[str, type[BaseModel]]]:
    return [(name, REGISTRY.get(kind, name).model()) for name in REGISTRY.names(kind)]


def _branch(def_: JsonSchemaValue, type_name: str, extra: dict[str, Any] | None = None) -> JsonSchemaValue:
    """A connector model's schema as the branch for ``type: type_name``."""
    branch = copy.deepcopy(def_)
    props = branch.setdefault("properties", {})
    described = props.get("type", {}).get("description")
    props["type"] = {"const": type_name, **({"description": described} if described else {})}
    if extra:
        props.update(extra)
    branch["required"] = ["type", *[r for r in branch.get("required", []) if r != "type"]]
    branch["title"] = type_name
    return branch


def _union(defs: dict[str, JsonSchemaValue], prefix: str, names: list[str], title: str) -> JsonSchemaValue:
    return {
        "title": title,
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": names, "description": f"which {title}"}},
        "oneOf": [{"$ref": f"#/$defs/{prefix}.{n}"} for n in names],
        "discriminator": {"propertyName": "type", "mapping": {n: f"#/$defs/{prefix}.{n}" for n in names}},
    }


def build_schema() -> dict[str, Any]:
    """The JSON Schema of a tidesync config file, every registered connector included."""
    from tidesync.config import PipelineConfig, TidesyncConfig
    from tidesync.sources.hybrid.config import HybridConfig
    from tidesync.sync.config import SyncSide, SyncTransforms
    from tidesync.transform.config import BUILTIN_STEPS

    sources, sinks = _plugins("source"), _plugins("sink")
    transforms = _plugins("transform")
    steps = list(BUILTIN_STEPS.items())
    # The models whose properties are patched below are listed, so that their $defs names are known.
    models: list[type[BaseModel]] = [TidesyncConfig, PipelineConfig, SyncSide, SyncTransforms]
    models += [m for _, m in (*sources, *sinks, *transforms)]
    models += [m for _, m in steps]
    refs, top = models_json_schema(
        [(m, "validation") for m in dict.fromkeys(models)],
        schema_generator=_ConfigJsonSchema,
        ref_template="#/$defs/{model}",
    )
    defs: dict[str, JsonSchemaValue] = top["$defs"]

    def def_of(model: type[BaseModel]) -> JsonSchemaValue:
        return defs[refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]]

    entry_name = {"name": {"type": "string", "description": "the sink's name in the fan-out (default: its type)"}}
    for name, model in sources:
        defs[f"source.{name}"] = _branch(def_of(model), name)
    for name, model in sinks:
        defs[f"sink.{name}"] = _branch(def_of(model), name)
        defs[f"fanout-sink.{name}"] = _branch(def_of(model), name, entry_name)
    primary = [n for n, _ in sources if n != "hybrid"]
    defs["Source"] = _union(defs, "source", [n for n, _ in sources], "source")
    defs["PrimarySource"] = _union(defs, "source", primary, "source (not hybrid)")
    defs["Sink"] = _union(defs, "sink", [n for n, _ in sinks], "sink")
    defs["FanoutSink"] = _union(defs, "fanout-sink", [n for n, _ in sinks], "sink")

    step_refs: list[JsonSchemaValue] = [refs[(m, "validation")] for _, m in steps]
    for name, model in transforms:
        defs[f"transform.{name}"] = {
            "type": "object",
            "properties": {name: def_of(model), "entity": def_of(BUILTIN_STEPS["rename"])["properties"]["entity"]},
            "required": [name],
            "additionalProperties": False,
        }
        step_refs.append({"$ref": f"#/$defs/transform.{name}"})
    defs["TransformStep"] = {
        "title": "transform step",
        "description": "one step key (rename, cast, filter, ...) and an optional entity: scope",
        "oneOf": step_refs,
    }
    steps_list: JsonSchemaValue = {"type": "array", "items": {"$ref": "#/$defs/TransformStep"}}

    def patch(model: type[BaseModel], field: str, value: JsonSchemaValue) -> None:
        prop = def_of(model)["properties"][field]
        kept = {k: prop[k] for k in ("description", "default", "title") if k in prop}
        def_of(model)["properties"][field] = {**value, **kept}

    ref = {name: {"$ref": f"#/$defs/{name}"} for name in ("Source", "PrimarySource", "Sink", "FanoutSink")}
    patch(PipelineConfig, "source", ref["Source"])
    patch(PipelineConfig, "sink", {"anyOf": [ref["Sink"], {"type": "null"}]})
    patch(PipelineConfig, "sinks", {"anyOf": [{"type": "array", "items": ref["FanoutSink"]}, {"type": "null"}]})
    patch(PipelineConfig, "transforms", steps_list)
    patch(SyncSide, "source", ref["Source"])
    for direction in ("a_to_b", "b_to_a"):
        patch(SyncTransforms, direction, steps_list)
    hybrid = [def_of(HybridConfig)] + [defs[k] for k in ("source.hybrid",) if k in defs]
    for part in ("primary", "fallback"):
        for branch in hybrid:
            branch["properties"][part] = {
                **ref["PrimarySource"],
                "description": branch["properties"][part].get("description", ""),
            }

    root = copy.deepcopy(def_of(TidesyncConfig))
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "tidesync config",
        "description": "A tidesync config file (tidesync run CONFIG.yaml); generated by `tidesync schema`.",
        **{k: v for k, v in root.items() if k != "title"},
        "$defs": {name: defs[name] for name in sorted(_reachable(root, defs))},
    }


def _reachable(root: JsonSchemaValue, defs: dict[str, JsonSchemaValue]) -> set[str]:
    """The names of the $defs that ``root`` refers to, directly or through others (the rest are dropped:
    a connector model's own def is only the source of its branches' copies)."""
    found: set[str] = set()
    todo: list[Any] = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name not in found:
                    found.add(name)
                    todo.append(defs[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found
