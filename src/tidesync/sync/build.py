"""From a ``syncs:`` entry to a :class:`~tidesync.sync.runner.SyncRunner` (and the pieces ``sync plan`` needs).

Each side's source comes from the registry like a pipeline's; its writes go
to a :class:`~tidesync.sync.sql.SqlEndpoint` on the side's ``dsn`` (default:
the source's ``dsn``, or ``sqlite:///<path>`` for a SQLite source). On
Postgres the endpoint writes under the replication origin
``tidesync_<sync>_<side>``, and that side's change events carrying it are
known as the sync's own.

A side whose source is a spreadsheet file (``type: csv`` / ``type: xlsx``)
writes that file through a :class:`~tidesync.sheets.endpoint.SheetEndpoint`
on the source's path, sheet and column types: no ``dsn``, no origin (its
echoes are known by the ledger of values written, as on MariaDB). An xlsx
side's sheet is the source's ``sheet:``, else the side's ``table:``. A Google
sheet side (``type: gsheets``) writes through a
:class:`~tidesync.sheets.gsheets_endpoint.GSheetsEndpoint` on the source's
spreadsheet, sheet (the side's ``table:`` fills the source's ``sheet:``, see
:class:`~tidesync.sync.config.SyncSide`), credentials and column types.
Every sheet side's endpoint hands the versions it wrote to the side's source
(``observe``); a Google sheet's endpoint also takes turns with that source
(its ``gate``). A side whose source is an app's API (``type: hubspot`` /
``type: stripe``, or a ``type: hybrid`` source whose fallback is one)
writes through that API (:mod:`.saas_endpoint`): no ``dsn``, no origin. A
hybrid HubSpot side's webhook primary is wrapped so its records are named as
the poller names them (:mod:`.app_webhooks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidesync.config import SyncSpec
from tidesync.errors import ConfigError
from tidesync.registry import REGISTRY
from tidesync.retry import RetryPolicy
from tidesync.sources.mariadb.marker import binlog_origin
from tidesync.state.store import StateStore
from tidesync.sync import decisions, pairing
from tidesync.sync.endpoint import Endpoint
from tidesync.sync.mapping import FieldMap, side_specs
from tidesync.sync.processor import SyncProcessor
from tidesync.sync.runner import ReadPolicy, SyncRunner
from tidesync.sync.saas_endpoint import is_saas, saas_endpoint, saas_entity
from tidesync.sync.sql import SqlEndpoint

SHEET_TYPES = ("csv", "xlsx", "gsheets")


def is_sheet(source: Any) -> bool:
    """A side whose source is a spreadsheet file: its endpoint writes the file, not a database."""
    return getattr(source, "type", None) in SHEET_TYPES


def origin_name(sync: str, side: str) -> str:
    return ("tidesync_" + re.sub(r"[^a-z0-9_]", "_", sync.lower()))[:60] + f"_{side}"


def side_dsn(side_cfg: Any, source: Any) -> str:
    if is_sheet(source):
        raise ConfigError(f"a sync side on a {source.type} source writes its file, not a database: it has no dsn")
    if side_cfg.dsn:
        return str(side_cfg.dsn)
    dsn = getattr(source, "dsn", None)
    if dsn:
        return str(dsn)
    path = getattr(source, "path", None)
    if path:
        return f"sqlite:///{path}"
    raise ConfigError(f"sync side with a {source.type} source needs dsn: (where writes go)")


def side_entity(side_cfg: Any, source: Any) -> str:
    """The entity name the side's source gives the table's change events."""
    if side_cfg.entity:
        return str(side_cfg.entity)
    if is_sheet(source):
        if source.type == "gsheets":
            return str(source.entity or source.sheet)
        return str(source.entity or Path(source.path).stem)
    if is_saas(source):
        return saas_entity(side_cfg, source)
    table = side_cfg.table
    if source.type == "postgres":
        return table if "." in table else f"public.{table}"
    if source.type in ("mariadb", "mysql"):  # the binlog source names entities database.table
        return table if "." in table else f"{source.database()}.{table}"
    for t in getattr(source, "tables", ()) or ():
        if getattr(t, "table", None) == table:
            return str(getattr(t, "entity", None) or table)
    return str(table)


def is_postgres(dsn: str) -> bool:
    return dsn.split(":", 1)[0].split("+", 1)[0].lower() in ("postgresql", "postgres")


@dataclass
class SyncParts:
    spec: SyncSpec
    fmap: FieldMap
    endpoints: dict[str, Endpoint]
    origins: dict[str, str | None]
    policy: decisions.Policy
    match: pairing.Match | None

    def processor(self, state: StateStore) -> SyncProcessor:
        cfg = self.spec.config
        cols = None
        if self.match is not None:
            cols = {s: tuple(self.fmap.column(s, f) for f in self.match.by) for s in ("a", "b")}
        return SyncProcessor(
            cfg.name,
            self.fmap,
            self.endpoints,
            state,
            self.policy,
            origins=self.origins,
            retry=RetryPolicy.from_config(cfg.retry),
            history_keep=cfg.history_keep,
            match_columns=cols or {"a": None, "b": None},
        )


def build_parts(spec: SyncSpec) -> SyncParts:
    from tidesync.transform import compile_transforms

    cfg = spec.config
    sources = {"a": spec.a_source, "b": spec.b_source}
    sides = {"a": cfg.a, "b": cfg.b}
    origins: dict[str, str | None] = {}
    endpoints: dict[str, Endpoint] = {}
    for s in ("a", "b"):
        if is_sheet(sources[s]):
            origins[s] = None
            endpoints[s] = sheet_endpoint(sides[s], sources[s])
            continue
        if is_saas(sources[s]):  # an app's API: no origins (echoes known by the ledger of values written)
            origins[s] = None
            endpoints[s] = saas_endpoint(sides[s], sources[s])
            continue
        dsn = side_dsn(sides[s], sources[s])
        origins[s] = origin_name(cfg.name, s) if is_postgres(dsn) else binlog_origin(sources[s], dsn)
        endpoints[s] = SqlEndpoint(dsn, str(sides[s].table), sides[s].key, origin=origins[s])
    a, b = side_specs(cfg.fields, cfg.a, cfg.b, [side_entity(sides[s], sources[s]) for s in ("a", "b")])
    fmap = FieldMap(
        a,
        b,
        shared_keys=cfg.shared_keys,
        a_to_b=compile_transforms(list(spec.a_to_b)) if spec.a_to_b else None,
        b_to_a=compile_transforms(list(spec.b_to_a)) if spec.b_to_a else None,
    )
    match = None
    if cfg.match is not None:
        fb = tuple(cfg.match.fallback) if cfg.match.fallback else None
        match = pairing.Match(tuple(cfg.match.by), fb, cfg.match.on_collision)
    return SyncParts(spec, fmap, endpoints, origins, decisions.Policy(cfg.rule_set(), cfg.deletes), match)


def side_sheet(side_cfg: Any, source: Any) -> str | None:
    """The sheet an xlsx side reads and writes: the source's ``sheet:``, else the side's ``table:``; None for
    csv (one sheet) or when neither names one (the first sheet)."""
    if source.type != "xlsx":
        return None
    name = source.sheet or side_cfg.table
    return str(name) if name else None


def sheet_endpoint(side_cfg: Any, source: Any) -> Endpoint:
    if source.type == "gsheets":
        from tidesync.sheets.gsheets_endpoint import GSheetsEndpoint

        return GSheetsEndpoint(source, side_cfg.key)  # the sheet: the source's (the side's table: filled it in)
    from tidesync.sheets.endpoint import SheetEndpoint

    return SheetEndpoint(source, side_cfg.key, sheet=side_sheet(side_cfg, source))


def side_source_config(source: Any, side_cfg: Any = None) -> Any:
    """A side's source config as the sync runs it.

    A Postgres side keeps no row shadow (``shadow: off``) unless its config
    names one: the sync narrows whole-row updates itself, against the stream
    image it keeps with each record (``RecordState.stream``), in the same
    commit as the rest of the record, so a second copy of every row's values
    in the source would only cost. ``shadow: rows`` still fills unchanged
    TOASTed columns for it.
    """
    if getattr(source, "type", None) == "postgres" and "shadow" not in source.model_fields_set:
        return source.model_copy(update={"shadow": "off"})
    if side_cfg is not None and is_sheet(source) and not source.sheet:
        sheet = side_sheet(side_cfg, source)
        if sheet:  # named by the side's ``table:``: the source reads the sheet the endpoint writes
            return source.model_copy(update={"sheet": sheet})
    return source


def build_sync(spec: SyncSpec, state: StateStore) -> SyncRunner:
    cfg = spec.config
    parts = build_parts(spec)
    sources = {
        side: REGISTRY.get("source", src.type).build(side_source_config(src, side_cfg))  # type: ignore[attr-defined]
        for side, src, side_cfg in (("a", spec.a_source, cfg.a), ("b", spec.b_source, cfg.b))
    }
    for side, src in (("a", spec.a_source), ("b", spec.b_source)):
        primary = getattr(src, "primary_model", None) if getattr(src, "type", None) == "hybrid" else None
        if is_saas(src) and getattr(primary, "provider", None) == "hubspot":
            from tidesync.sync.app_webhooks import HubSpotWebhookKeys

            hybrid = sources[side]  # HubSpot's webhooks name records as its poller does (see .app_webhooks)
            hybrid.primary = HubSpotWebhookKeys(hybrid.primary)
        if is_sheet(src):  # the source diffs every version of the file the endpoint saves (see sheets.endpoint)
            parts.endpoints[side].listener = sources[side].observe  # type: ignore[attr-defined]
        if getattr(src, "type", None) == "gsheets":  # and they take turns (see sheets.gsheets_endpoint)
            parts.endpoints[side].lock = sources[side].gate  # type: ignore[attr-defined]

    async def pair(proc: SyncProcessor) -> None:
        await pairing.go_live(proc, parts.match)

    return SyncRunner(
        cfg.name,
        sources,
        parts.endpoints,
        state,
        lambda: parts.processor(state),
        pair=pair,
        read=ReadPolicy(cfg.batch.max_events, cfg.batch.max_wait_ms / 1000),
        restart=RetryPolicy.from_config(cfg.restart),
    )
