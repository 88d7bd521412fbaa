"""The config reference, rendered from the config models themselves.

``python -m tidesync.reference > docs/config-reference.md`` writes the page the
README links to; ``python -m tidesync.reference --pages docs/connectors/generated`` writes one
page per connector type for the docs site (:mod:`tidesync.reference_pages`). One spec drives
parsing, validation and the docs: every key a model accepts is listed with its type, default and
description, so the page cannot drift from the code (tests/unit/test_readme.py compares them).
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tidesync.registry import REGISTRY, Kind

_HEADER = """\
# Config reference

Generated from the config models by `python -m tidesync.reference > docs/config-reference.md`;
a test fails when this page and the code disagree. Nested keys are written with dots
(`retry.max_delay`). The example config of each connector is the docstring of the module named
under its heading.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) if not isinstance(a, str) else f'"{a}"' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, set, tuple, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    else:
        value = info.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(see below)"
    if value in ({}, []):
        return "empty"
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def rows(model: type[BaseModel], prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key of ``model``, nested models expanded."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        if key == "type" and not prefix:
            continue
        nested = _models_in(info.annotation)
        text = info.description or next((m.__doc__.split("\n\n")[0] for m in nested if m.__doc__), "")
        description = " ".join(text.split()).replace("|", "\\|")
        yield key, _type_name(info.annotation), _default(info), description
        if depth < 3:
            for model_ in nested:
                yield from rows(model_, f"{key}.", depth + 1)


def _table(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    out.extend(f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows(model, prefix))
    return out


def _section(kind: Kind) -> list[str]:
    out: list[str] = []
    aliases: dict[str, list[str]] = {}
    seen: dict[type[BaseModel], str] = {}
    for name in REGISTRY.names(kind):
        plugin = REGISTRY.get(kind, name)
        model = plugin.model()
        if model in seen:
            aliases.setdefault(seen[model], []).append(name)
            continue
        seen[model] = name
    for name, model in ((n, m) for m, n in seen.items()):
        plugin = REGISTRY.get(kind, name)
        also = aliases.get(name)
        alias_text = f" (also `type: {'`, `'.join(also)}`)" if also else ""
        module = importlib.import_module(model.__module__).__name__
        out += ["", f"### `type: {name}` {kind}{alias_text}", "", plugin.summary + ".", "", f"Module: `{module}`.", ""]
        out += _table(model)
    return out


def render() -> str:
    from tidesync.config import ApiConfig, LeaseConfig, PipelineConfig

    lines = [_HEADER, "## Pipeline keys", ""]
    lines += _table(PipelineConfig)
    lines += ["", "## `api:`", ""]
    lines += _table(ApiConfig)
    lines += ["", "## `lease:`", "", LeaseConfig.__doc__ or "", ""]
    lines += _table(LeaseConfig)
    lines += ["", "## Sources"]
    lines += _section("source")
    lines += ["", "## Sinks"]
    lines += _section("sink")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--pages"]:
        # One page per connector type for the docs site (tidesync.reference_pages).
        from tidesync.reference_pages import write_pages

        for path in write_pages(Path(sys.argv[2] if len(sys.argv) > 2 else "docs/connectors/generated")):
            print(path)
    else:
        print(render(), end="")
