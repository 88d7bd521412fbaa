"""``tidesync status``: per pipeline, its state, position, lag, dead letters and the WAL its slot retains."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from tidesync.cli.common import ConfigArg, ago, load, out, run_async, write_json
from tidesync.secrets import REDACTOR


def status(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="with --json: the cluster (processes, leases, partitions, stream)")
    ] = False,
) -> None:
    """Per pipeline: state, position, events applied, lag, DLQ depth, last error, WAL its slot retains.

    With ``cluster:`` in the config, also the cluster: its processes, who holds each capture and partition,
    each partition's lag (messages not yet applied) and the stream's depth.
    """
    from tidesync.footprint import read_slots
    from tidesync.state import open_state_store

    loaded = load(config, lazy=True)

    view: dict[str, Any] = {}
    works: list[Any] = []
    names = [p.name for p in loaded.pipelines]
    if loaded.model.cluster is not None and loaded.model.lease is not None:
        from tidesync.engine.cluster import plan

        works = plan(loaded.model.cluster, loaded.pipelines)
        names = [w.spec.name for w in works]  # each capture, then each partition of each sink group

    async def main() -> list[dict[str, Any]]:
        store = open_state_store(loaded.state_url)
        slots = asyncio.ensure_future(read_slots(loaded, [p.name for p in loaded.pipelines]))
        try:
            await store.open()
            rows: list[dict[str, Any]] = []
            known = {s.pipeline: s for s in await store.status_list()}
            lease_names = {w.spec.name: w.lease for w in works} or {n: f"pipeline:{n}" for n in names}
            leases = await _leases(store, loaded, lease_names)
            for name in names:
                st = known.get(name)
                depth = await store.dlq_count(name)
                rows.append(
                    {
                        "pipeline": name,
                        "state": st.state if st else "never run",
                        "position": list(st.position) if st and st.position else None,
                        "events_applied": st.events_applied if st else 0,
                        "lag_seconds": round(st.lag_seconds, 3) if st else None,
                        "dlq_depth": depth,
                        "last_error": st.last_error if st else None,
                        "next_attempt_at": st.next_attempt_at if st else None,
                        "updated_at": st.updated_at if st else None,
                        "blocked_entity": st.extra.get("blocked_entity") if st else None,
                        "blocked_since": st.extra.get("blocked_since") if st else None,
                        **leases.get(name, {}),
                    }
                )
            readings = await slots
            for row in rows:
                row["retained_wal"] = _retained_wal(readings.get(str(row["pipeline"]), []))
            if works:
                from tidesync.engine.cluster_view import cluster_view

                assert loaded.model.cluster is not None and loaded.model.lease is not None
                view.update(await cluster_view(store, loaded.model.cluster, works, loaded.model.lease.ttl_seconds))
            return rows
        finally:
            slots.cancel()
            await store.close()

    rows = run_async(main)
    if as_json:
        write_json(view if cluster else rows)
        return
    table = Table(title="tidesync pipelines")
    cols: tuple[str, ...] = (
        "pipeline",
        "state",
        "position",
        "applied",
        "lag",
        "DLQ",
        "retained WAL",
        "updated",
        "last error / next attempt",
    )
    if any("lease_holder" in r for r in rows):
        cols = (*cols, "lease (standby)")
    for col in cols:
        table.add_column(col)
    for r in rows:
        state_style = {
            "running": "green",
            "retrying": "yellow",
            "degraded": "yellow",
            "blocked": "red",
            "failed": "red",
        }.get(r["state"], "")
        note = r["last_error"] or ""
        if r["next_attempt_at"]:
            note += f" (next {'run' if r['state'] == 'scheduled' else 'attempt'} {ago(r['next_attempt_at'])})"
        table.add_row(
            r["pipeline"],
            f"[{state_style}]{r['state']}[/]" if state_style else r["state"],
            json.dumps(r["position"]) if r["position"] else "-",
            f"{r['events_applied']:,}",
            f"{r['lag_seconds']:.2f}s" if r["lag_seconds"] is not None else "-",
            str(r["dlq_depth"]),
            _wal_cell(r["retained_wal"]),
            ago(r["updated_at"]),
            REDACTOR.redact(note),
            *([_lease_cell(r)] if "lease_holder" in r else []),
        )
    out.print(table)
    for r in rows:
        if r["state"] == "blocked":
            out.print(
                f"[red]pipeline {r['pipeline']} is blocked on {r['blocked_entity'] or 'its sink'} since "
                f"{ago(r['blocked_since'])}: nothing is dead-lettered and its position is kept; fix the cause above "
                "and it resumes by itself[/]",
                highlight=False,
            )
        elif r["state"] == "degraded":
            out.print(
                f"[yellow]pipeline {r['pipeline']} dead-lettered events in the last 5 minutes: "
                f"`tidesync dlq list {config} --pipeline {r['pipeline']}`[/]",
                highlight=False,
            )
        wal = r["retained_wal"]
        if wal and wal.get("exists") and not wal.get("active") and wal.get("bytes") is not None:
            out.print(
                f"[yellow]pipeline {r['pipeline']} is stopped and its slot {wal['slot']} retains {wal['size']} of WAL;"
                f" run it, or `tidesync drop {config} {r['pipeline']}`[/]",
                highlight=False,
            )

    if view:
        _print_cluster(view)


def _print_cluster(view: dict[str, Any]) -> None:
    s = view["stream"]
    depth = f"{s['messages']:,} messages" if s.get("messages") is not None else "depth unknown"
    out.print(
        f"cluster: stream {s['name']} ({depth}, {s['replicas']} replica(s)"
        f"{', leader ' + s['leader'] if s.get('leader') else ''}); "
        f"{len(view['processes'])} process(es): "
        + (", ".join(f"{p['process']} ({len(p['leases'])} leases)" for p in view["processes"]) or "none"),
        highlight=False,
    )
    table = Table(title="tidesync cluster: captures and partitions")
    for col in ("pipeline", "work", "holder", "epoch", "lag (messages)"):
        table.add_column(col)
    for c in view["captures"]:
        table.add_row(c["pipeline"], "capture", c["holder"] or "[red]none[/]", str(c["epoch"] or "-"), "-")
    for p in view["partitions"]:
        lag = "-" if p["pending"] is None else f"{p['pending'] + p['ack_pending']:,}"
        holder = p["holder"] or "[red]none[/]"
        group = p["group"].removeprefix(p["pipeline"] + ".") if p["group"] != p["pipeline"] else "apply"
        table.add_row(p["pipeline"], f"{group} p{p['partition']}", holder, str(p["epoch"] or "-"), lag)
    out.print(table)
    for e in view["errors"]:
        out.print(f"[red]cluster: {e}[/]", highlight=False)


async def _leases(store: Any, loaded: Any, lease_names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per pipeline (with `lease:` configured): the process holding its lease, and the standby processes.

    ``lease_names``: pipeline (or a cluster's capture or partition) -> its lease."""
    from tidesync.engine.lease import STANDBY_NAMESPACE, holder
    from tidesync.state import KeyValues, Leases

    if loaded.model.lease is None or not isinstance(store, Leases) or not isinstance(store, KeyValues):
        return {}
    held = {x.name: x for x in await store.lease_list() if x.remaining > 0}
    notes = await store.kv_scan(STANDBY_NAMESPACE)
    fresh_after = time.time() - 3 * loaded.model.lease.ttl_seconds
    out: dict[str, dict[str, Any]] = {}
    for name, lease_name in lease_names.items():
        lease = held.get(lease_name)
        owner = holder(lease.owner) if lease else None
        waiting = {
            n["owner"]
            for k, n in notes.items()
            if k.startswith(f"{name}/") and n.get("seen_at", 0) > fresh_after and n.get("owner") != owner
        }
        out[name] = {
            "lease_holder": owner,
            "lease_epoch": lease.epoch if lease else None,
            "standby": sorted(waiting),
        }
    return out


def _lease_cell(r: dict[str, Any]) -> str:
    standby = ", ".join(f"{p} (standby)" for p in r["standby"])
    return ", ".join(x for x in (r["lease_holder"] or "none", standby) if x)


def _retained_wal(readings: list[Any]) -> dict[str, Any] | None:
    """The status entry of a pipeline's replication slot: None for a source without one."""
    from tidesync.footprint import human_bytes

    if not readings:
        return None
    r = readings[0]  # a pipeline has one source
    entry: dict[str, Any] = {"slot": r.ref.slot, "exists": None, "active": None, "bytes": None, "size": None}
    if r.error is not None:
        entry["error"] = r.error
    elif r.usage is None:
        entry["exists"] = False
    else:
        u = r.usage
        entry.update(exists=True, active=u.active, bytes=u.retained_bytes, wal_status=u.wal_status)
        entry["size"] = human_bytes(u.retained_bytes) if u.retained_bytes is not None else None
    return entry


def _wal_cell(wal: dict[str, Any] | None) -> str:
    if wal is None:
        return "-"
    if "error" in wal:  # a connection error may quote the source's DSN
        return f"unknown ({REDACTOR.redact(str(wal['error']))})"
    if not wal["exists"]:
        return "no slot"
    if wal["size"] is None:
        return f"none ({wal.get('wal_status') or 'invalidated'})"
    return f"{wal['size']}" + ("" if wal["active"] else " (stopped)")
