"""``tidesync sync plan|history`` and ``tidesync conflicts list|show|resolve``.

These commands never write to either side of a sync. ``sync plan`` reads both
tables and the state store and changes nothing anywhere: its endpoints are
opened for reading (no Postgres replication origin is created or attached),
and a state store that does not exist yet is not created (the plan then
reads as if it were empty). ``conflicts resolve`` records a person's choice
in the state store, and the running sync applies it (see :mod:`tidesync.sync.resolve`).

Arguments come config first, as in every other command: ``tidesync sync plan
CONFIG NAME``. The order of earlier releases (``NAME CONFIG``) is still
accepted when only the second argument names a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tidesync.cli.common import ConfigArg, JsonOpt, ago, fail, guarded, load, out, run_async, with_store, write_json
from tidesync.event import json_dumps

sync_app = typer.Typer(no_args_is_help=True, help="Two-way syncs: dry-run the initial pairing, read the history.")
conflicts_app = typer.Typer(no_args_is_help=True, help="The review queue of two-way syncs.")


def _config_first(config: Path, name: str) -> tuple[Path, str]:
    """``(config, name)``; swapped when the arguments came the old way round (``NAME CONFIG``)."""
    if not config.is_file() and Path(name).is_file():
        return Path(name), str(config)
    return config, name


async def _open_store_for_reading(url: str) -> Any:
    """The state store at ``url``, opened without creating it: an empty in-memory one when it does not exist yet.

    Opening an existing store of the current version writes nothing; opening a missing one would create
    its file or tables.
    """
    from tidesync.state import open_state_store
    from tidesync.state.sqlite import SqliteStateStore

    store = open_state_store(url)
    if isinstance(store, SqliteStateStore):
        exists = store.path == ":memory:" or Path(store.path).exists()
    else:
        exists = await _postgres_store_exists(store)
    if not exists:
        store = SqliteStateStore(":memory:")
    await store.open()
    return store


async def _postgres_store_exists(store: Any) -> bool:
    import psycopg

    from tidesync.errors import StateStoreError

    try:
        async with await psycopg.AsyncConnection.connect(store._conninfo, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = 'meta'", (store.schema,)
            )
            return await cur.fetchone() is not None
    except psycopg.Error as exc:
        raise StateStoreError(f"cannot read the Postgres state store: {type(exc).__name__}") from exc


def _show(value: Any) -> str:
    text = json_dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _side_value(side: dict[str, Any] | None) -> str:
    """A conflict side's value, shown ("null" for a side with no record)."""
    return _show((side or {}).get("value"))


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose columns wrap long values rather than cut them."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


@sync_app.command("plan")
def sync_plan(
    config: ConfigArg,
    name: Annotated[str, typer.Argument(help="the sync")],
    limit: Annotated[int, typer.Option(help="at most this many items per list")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Dry run of the initial pairing: matches, records to create, collisions, field differences and their settlement.

    Reads both tables and the state store; changes nothing on either side nor in the state store.
    Exit 1 when match collisions would make the start fail.
    """
    config, name = _config_first(config, name)
    loaded = load(config)
    spec = guarded(lambda: loaded.sync(name))

    async def main() -> dict[str, Any]:
        from tidesync.sync import pairing
        from tidesync.sync.build import build_parts

        parts = build_parts(spec)
        store = await _open_store_for_reading(loaded.state_url)
        try:
            for e in parts.endpoints.values():
                await e.open(writes=False)
            proc = parts.processor(store)
            await proc.load()
            p = await pairing.plan(proc, parts.match, proc.policy.rules)
            report = p.as_dict(limit)
            report["blocking_collisions"] = sum(1 for c in p.collisions if "a_keys" in c and "b_keys" in c)
            report["on_collision"] = parts.match.on_collision if parts.match else None
            return report
        finally:
            for e in parts.endpoints.values():
                await e.close()
            await store.close()

    report = run_async(main)
    blocked = report["blocking_collisions"] and report["on_collision"] != "create"
    if as_json:
        write_json(report)
        raise typer.Exit(1 if blocked else 0)
    out.print(
        f"sync {name}: {report['matched']} matched pair(s); {report['create_on_b']} record(s) to create on B, "
        f"{report['create_on_a']} on A; {len(report['collisions'])} collision(s); "
        f"{len(report['differences'])} differing field(s); {report['already_tracked']} already tracked",
        highlight=False,
    )
    if report["collisions"]:
        t = _table("match collisions (would create duplicates)", ("fields", "value", "A keys", "B keys"))
        for c in report["collisions"]:
            t.add_row(", ".join(c["fields"]), _show(c["value"]), _show(c.get("a_keys", [])), _show(c.get("b_keys", [])))
        out.print(t)
    if report["differences"]:
        t = _table(
            "differing fields of matched records, and how the rules settle them",
            ("A key", "B key", "field", "A", "B", "rule", "outcome", "why"),
        )
        for d in report["differences"]:
            t.add_row(
                _show(d["a_key"]),
                _show(d["b_key"]),
                d["field"],
                _show(d["a"]),
                _show(d["b"]),
                d["rule"],
                d["outcome"] + ("" if d["value"] is None else f" -> {_show(d['value'])}"),
                d["why"],
            )
        out.print(t)
    for side, other in (("b", "a"), ("a", "b")):
        keys = report[f"records_to_create_on_{side}"]
        if keys:
            out.print(f"to create on {side.upper()} (from {other.upper()}): " + ", ".join(_show(k) for k in keys))
    if blocked:
        out.print("[red]the start would fail on these collisions[/] (fix them, or set match.on_collision: create)")
        raise typer.Exit(1)


@sync_app.command("history")
def sync_history(
    config: ConfigArg,
    name: Annotated[str, typer.Argument(help="the sync")],
    limit: Annotated[int, typer.Option(help="the newest this many")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Settled conflicts, newest last: field, candidates, winner, rule and why."""
    from tidesync.sync.resolve import history

    config, name = _config_first(config, name)
    loaded = load(config, lazy=True)
    guarded(lambda: loaded.sync(name))
    entries = run_async(lambda: with_store(loaded, lambda s: history(s, name, limit)))
    if as_json:
        write_json(entries)
        return
    t = _table(f"sync {name}: history", ("#", "record", "field", "A", "B", "rule", "winner", "value", "by", "why"))
    for h in entries:
        t.add_row(
            str(h["seq"]),
            _show(h["keys"]),
            h["field"],
            _side_value(h["a"]),
            _side_value(h["b"]),
            h["rule"],
            h["winner"] or "-",
            _show(h["value"]),
            h["by"],
            h["why"],
        )
    out.print(t)


@conflicts_app.command("list")
def conflicts_list(
    config: ConfigArg,
    sync: Annotated[str | None, typer.Option("--sync", "-s", help="only this sync")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pending conflicts, oldest first."""
    from tidesync.sync.resolve import list_conflicts

    loaded = load(config, lazy=True)
    if sync is not None:
        guarded(lambda: loaded.sync(sync))
    entries = run_async(lambda: with_store(loaded, lambda s: list_conflicts(s, sync)))
    if as_json:
        write_json(entries)
        return
    t = _table(
        f"conflicts ({len(entries)})",
        ("id", "kind", "record", "field", "A", "B", "agreed before", "rule", "waiting", "why"),
    )
    for e in entries:
        t.add_row(
            e["id"],
            e["kind"],
            _show(e["keys"]),
            e["field"],
            _side_value(e["a"]),
            _side_value(e["b"]),
            _side_value(e["shadow"]),
            e["rule"],
            ago(e["created_at"]),
            e["why"],
        )
    out.print(t)


@conflicts_app.command("show")
def conflicts_show(
    config: ConfigArg, conflict: Annotated[str, typer.Argument(help="the id, e.g. customers:7")]
) -> None:
    """One conflict: both candidates with their commit times, the value agreed before, why it waits."""
    from tidesync.sync.resolve import get_conflict

    loaded = load(config, lazy=True)
    entry = run_async(lambda: with_store(loaded, lambda s: get_conflict(s, conflict)))
    if entry is None:
        fail(f"no pending conflict {conflict}", 1)
    out.print_json(json_dumps(entry).decode())


@conflicts_app.command("resolve")
def conflicts_resolve(
    config: ConfigArg,
    conflict: Annotated[str, typer.Argument(help="the id, e.g. customers:7")],
    take: Annotated[str | None, typer.Option("--take", help="a or b: that side's value wins")] = None,
    value: Annotated[str | None, typer.Option("--value", help="a JSON value to write to both sides")] = None,
    remember: Annotated[
        bool, typer.Option("--remember", help="with --take: prefer that side for this field from now on")
    ] = False,
    by: Annotated[str, typer.Option("--by", help="who resolves it (goes to the history)")] = "cli",
) -> None:
    """Choose the winner of a conflict; the running sync writes it to both sides and records it."""
    from tidesync.sync.resolve import request_resolution

    loaded = load(config)
    parsed: Any = None
    if value is not None:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            fail(f"--value is not valid JSON ({exc.msg}); quote strings: --value '\"text\"'", 2)
    res = run_async(
        lambda: with_store(
            loaded,
            lambda s: request_resolution(
                s,
                conflict,
                take=take,
                value=parsed,
                has_value=value is not None,
                remember=remember,
                by=by,
                now=time.time(),
            ),
        )
    )
    what = f"take {take.upper()}" if take else f"value {_show(parsed)}"
    out.print(f"{conflict} ({res.field}): {what} recorded; the running sync writes it to both sides", highlight=False)
    if res.rule_line:
        sync = conflict.rpartition(":")[0]
        out.print(
            f"remembered: {res.field} now prefers {take.upper()} (kept in the state store). To keep it in the "  # type: ignore[union-attr]
            f"config, add under syncs[{sync}].rules.fields:\n  {res.rule_line}",
            highlight=False,
        )
