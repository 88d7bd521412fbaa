"""The endpoints of a loaded config, in file order: each pipeline's source and sink, each sync's sides, the state.

A fan-out pipeline's source is listed once (its sinks share it). The entities a
SQL sink must find tables for are known when the source names its tables
(Postgres, MariaDB/MySQL); for other sources they are known only when events arrive.
"""

from __future__ import annotations

from typing import Any

from tidesync.checks import Endpoint
from tidesync.config import format_loc


def source_entities(source: Any) -> tuple[str, ...] | None:
    """The entities ``source`` produces, when its config names them."""
    type_ = getattr(source, "type", None)
    if type_ == "postgres":
        return tuple(t if "." in t else f"public.{t}" for t in source.tables)
    if type_ in ("mariadb", "mysql"):
        return tuple(f"{db}.{table}" for db, table in source.qualified_tables())
    return None


def endpoints(loaded: Any) -> list[Endpoint]:
    api = getattr(loaded.model, "api", None)
    out: list[Endpoint] = []
    seen_sources: set[int] = set()
    for p in loaded.pipelines:
        context = p.fanout or p.name
        src_at = f"pipelines[{p.index}].source"
        if p.index not in seen_sources:
            seen_sources.add(p.index)
            out.append(
                Endpoint(
                    f"pipeline {context} source ({p.source.type})",
                    "source",
                    p.source.type,
                    p.source,
                    src_at,
                    context,
                    api=api,
                )
            )
        sink_at = format_loc(p.sink_path)
        out.append(
            Endpoint(
                f"pipeline {p.name} sink ({p.sink.type})",
                "sink",
                p.sink.type,
                p.sink,
                sink_at,
                p.name,
                source_entities(p.source),
                api,
            )
        )
    for i, s in enumerate(loaded.syncs):
        for side, model in (("a", s.a_source), ("b", s.b_source)):
            out.append(
                Endpoint(
                    f"sync {s.name} side {side} ({model.type})",
                    "source",
                    model.type,
                    model,
                    f"syncs[{i}].{side}.source",
                    f"{s.name}.{side}",
                    api=api,
                )
            )
    out.append(Endpoint("state store", "state", "state", loaded.state_url, "state"))
    return out
