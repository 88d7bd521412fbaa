"""The ``tidesync`` command line.

Exit codes: 0 success, 1 a runtime failure (the message says which pipeline and
why), 2 a configuration error (the message names the key and the file line).
No command prints a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tidesync.config import LoadedConfig, load_config
from tidesync.errors import ConfigError, TidesyncError
from tidesync.event import json_dumps, to_jsonable
from tidesync.secrets import REDACTOR, install_log_redaction
from tidesync.state.store import DeadLetter, DeadLetterFilter

app = typer.Typer(add_completion=False, no_args_is_help=True, help="tidesync: real-time data synchronization.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and act on the dead-letter queue.")
app.add_typer(dlq_app, name="dlq")
webhook_app = typer.Typer(no_args_is_help=True, help="Webhook delivery endpoints.")
app.add_typer(webhook_app, name="webhook")
from tidesync.sync.cli import conflicts_app, sync_app  # noqa: E402  (the sync commands live with the sync)

app.add_typer(sync_app, name="sync")
app.add_typer(conflicts_app, name="conflicts")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigArg = Annotated[Path, typer.Argument(help="the YAML config file", show_default=False)]
_debug = False


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {REDACTOR.redact(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run a command body, turning errors into a message and an exit code."""
    try:
        return fn()
    except typer.Exit:
        raise
    except ConfigError as exc:
        _fail(str(exc), 2)
    except TidesyncError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        if _debug:
            raise
        _fail(f"{type(exc).__name__}: {exc} (run with --debug for a traceback)", 1)
    raise AssertionError("unreachable")


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return guarded(lambda: asyncio.run(coro_fn()))


def _load(path: Path, *, lazy: bool = False) -> LoadedConfig:
    """Load the config. ``lazy``: for commands that only read the state store, a secret
    reference that cannot be read is left unresolved instead of failing the load (the
    state URL's own secret is still needed); see :func:`tidesync.config.load_config`."""
    return guarded(lambda: load_config(path, secrets="lazy" if lazy else "eager"))


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
) -> None:
    global _debug
    _debug = debug
    _setup_logging(log_level)


@app.command()
def validate(
    config: ConfigArg,
    show: Annotated[bool, typer.Option("--show", help="print the config with secrets masked")] = False,
) -> None:
    """Check a config file; exit 2 with the key and line of every problem."""
    loaded = _load(config)
    if show:
        out.print_json(json.dumps(loaded.redacted(), default=str))
    names = ", ".join(p.name for p in loaded.pipelines) or "none"
    syncs = f"; {len(loaded.syncs)} sync(s): {', '.join(s.name for s in loaded.syncs)}" if loaded.syncs else ""
    out.print(f"[green]ok[/]: {config} — {len(loaded.pipelines)} pipeline(s): {names}{syncs}", highlight=False)


def handle_stop_signals(engine: Any) -> None:
    """First SIGINT/SIGTERM: drain and stop. A second one: leave at once (as safe as a crash)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if engine.stop.is_set():
            err.print(f"{sig.name} again: stopping without draining", highlight=False)
            os._exit(128 + int(sig))
        engine.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


def _run_engine(config: Path, pipeline: list[str] | None, force_api: bool) -> None:
    from tidesync.engine.build import build_engine

    loaded = _load(config)

    async def main() -> int:
        from tidesync.api.server import build_api
        from tidesync.observe.monitor import Monitor
        from tidesync.observe.recent import install as keep_recent_errors
        from tidesync.reconcile.schedule import ReconcileSchedules

        keep_recent_errors()
        engine = build_engine(loaded, pipeline)
        if not engine.runners and not engine.syncs:
            raise ConfigError("no enabled pipeline or sync to run", path=str(config))
        # Signals are handled for the whole life of the command, not only while the
        # pipelines run: a SIGTERM during start-up or shutdown still drains cleanly.
        handle_stop_signals(engine)
        monitor = Monitor.for_config(loaded, engine)
        api = build_api(loaded, engine, monitor=monitor, force=force_api)
        schedules = ReconcileSchedules(loaded, [r.name for r in engine.runners]).start()
        try:
            async with monitor:  # metrics readings and alerts, on a timer
                if api is None:
                    code = await engine.run(install_signals=False)
                else:
                    async with api:  # webhooks, admin API, dashboard; stops after the pipelines stopped
                        code = await engine.run(install_signals=False)
        finally:
            await schedules.stop()
        for name, exc in engine.failed.items():
            err.print(f"[red]pipeline {name} failed:[/] {REDACTOR.redact(str(exc))}", highlight=False)
        return code

    raise typer.Exit(run_async(main))


@app.command()
def run(
    config: ConfigArg,
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="run only these")] = None,
    api: Annotated[bool, typer.Option("--api", help="serve the admin API and dashboard (needs api.token)")] = False,
) -> None:
    """Run the pipelines of a config until SIGINT/SIGTERM (finishes the batch in flight, checkpoints, exits 0)."""
    _run_engine(config, pipeline, api)


@app.command()
def serve(
    config: ConfigArg,
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="run only these")] = None,
) -> None:
    """Run the pipelines plus the admin API, /metrics and the dashboard on api.listen (needs api.token)."""
    _run_engine(config, pipeline, True)


@app.command()
def top(
    config: ConfigArg,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one view and exit")] = False,
) -> None:
    """A live view of throughput, latency, lag and DLQ per pipeline (from the running server, else the state store)."""
    from tidesync.observe.top import run_top

    loaded = _load(config)
    run_async(lambda: run_top(loaded, out, interval=interval, once=once))


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    d = time.time() - ts
    if d < 0:
        return f"in {-d:.1f}s"
    return f"{d:.1f}s ago" if d < 120 else f"{d / 60:.1f}m ago"


@app.command()
def status(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per pipeline: state, position, events applied, lag, DLQ depth, last error, WAL its slot retains."""
    from tidesync.footprint import read_slots
    from tidesync.state import open_state_store

    loaded = _load(config, lazy=True)

    async def main() -> list[dict[str, Any]]:
        store = open_state_store(loaded.state_url)
        slots = asyncio.ensure_future(read_slots(loaded, [p.name for p in loaded.pipelines]))
        try:
            await store.open()
            rows: list[dict[str, Any]] = []
            known = {s.pipeline: s for s in await store.status_list()}
            for spec in loaded.pipelines:
                st = known.get(spec.name)
                depth = await store.dlq_count(spec.name)
                rows.append(
                    {
                        "pipeline": spec.name,
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
                    }
                )
            readings = await slots
            for row in rows:
                row["retained_wal"] = _retained_wal(readings[str(row["pipeline"])])
            return rows
        finally:
            slots.cancel()
            await store.close()

    rows = run_async(main)
    if as_json:
        sys.stdout.write(json_dumps(REDACTOR.redact_obj(rows)).decode() + "\n")
        return
    table = Table(title="tidesync pipelines")
    cols = (
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
            note += f" (next attempt {_ago(r['next_attempt_at'])})"
        table.add_row(
            r["pipeline"],
            f"[{state_style}]{r['state']}[/]" if state_style else r["state"],
            json.dumps(r["position"]) if r["position"] else "-",
            f"{r['events_applied']:,}",
            f"{r['lag_seconds']:.2f}s" if r["lag_seconds"] is not None else "-",
            str(r["dlq_depth"]),
            _wal_cell(r["retained_wal"]),
            _ago(r["updated_at"]),
            REDACTOR.redact(note),
        )
    out.print(table)
    for r in rows:
        if r["state"] == "blocked":
            out.print(
                f"[red]pipeline {r['pipeline']} is blocked on {r['blocked_entity'] or 'its sink'} since "
                f"{_ago(r['blocked_since'])}: nothing is dead-lettered and its position is kept; fix the cause above "
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
    if "error" in wal:
        return f"unknown ({wal['error']})"
    if not wal["exists"]:
        return "no slot"
    if wal["size"] is None:
        return f"none ({wal.get('wal_status') or 'invalidated'})"
    return f"{wal['size']}" + ("" if wal["active"] else " (stopped)")


# --- dead-letter queue --------------------------------------------------------

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline")]
EntityOpt = Annotated[str | None, typer.Option("--entity", "-e", help="only this entity")]
ErrorOpt = Annotated[str | None, typer.Option("--error", help="error class (permanent, transient, transform, blocked)")]
ContainsOpt = Annotated[str | None, typer.Option("--contains", help="error message contains this text")]
OlderOpt = Annotated[str | None, typer.Option("--older-than", help="last failure older than e.g. 30s, 10m, 2h, 1d")]
NewerOpt = Annotated[str | None, typer.Option("--newer-than", help="last failure within e.g. 10m, 1h")]


def parse_age(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise ConfigError(f"cannot read age {text!r}; use e.g. 30s, 10m, 2h, 1d") from None


def _filter(
    pipeline: str | None,
    entity: str | None,
    error: str | None,
    contains: str | None,
    older: str | None,
    newer: str | None,
    ids: list[int] | None = None,
    limit: int | None = None,
) -> DeadLetterFilter:
    now = time.time()
    o, n = parse_age(older), parse_age(newer)
    return DeadLetterFilter(
        pipeline=pipeline,
        entity=entity,
        error_class=error,
        error_contains=contains,
        older_than=now - o if o is not None else None,
        newer_than=now - n if n is not None else None,
        ids=tuple(ids) if ids else None,
        limit=limit,
    )


def _entry_dict(e: DeadLetter) -> dict[str, Any]:
    return {
        "id": e.id,
        "pipeline": e.pipeline,
        "sink": e.sink,
        "entity": e.entity,
        "key": list(e.key),
        "op": e.event.op,
        "error_class": e.error_class,
        "error": e.error,
        "attempts": e.attempts,
        "first_failed_at": e.first_failed_at,
        "last_failed_at": e.last_failed_at,
        "event": to_jsonable(e.event),
    }


async def _with_store(loaded: LoadedConfig, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from tidesync.state import open_state_store

    store = open_state_store(loaded.state_url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


@dlq_app.command("list")
def dlq_list(
    config: ConfigArg,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead letters, oldest first."""
    loaded = _load(config, lazy=True)
    flt = guarded(lambda: _filter(pipeline, entity, error, contains, older_than, newer_than, limit=limit))
    entries = run_async(lambda: _with_store(loaded, lambda s: s.dlq_list(flt)))
    if as_json:
        sys.stdout.write(json_dumps(REDACTOR.redact_obj([_entry_dict(e) for e in entries])).decode() + "\n")
        return
    table = Table(title=f"dead letters ({len(entries)})")
    for col in ("id", "pipeline", "entity", "key", "op", "class", "attempts", "last failure", "error"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.id),
            e.pipeline,
            e.entity,
            json_dumps(list(e.key)).decode(),
            e.event.op,
            e.error_class,
            str(e.attempts),
            _ago(e.last_failed_at),
            REDACTOR.redact(e.error)[:120],
        )
    out.print(table)


@dlq_app.command("show")
def dlq_show(config: ConfigArg, entry_id: Annotated[int, typer.Argument(help="the entry id")]) -> None:
    """Show one dead letter with its whole event."""
    loaded = _load(config, lazy=True)
    entry = run_async(lambda: _with_store(loaded, lambda s: s.dlq_get(entry_id)))
    if entry is None:
        _fail(f"no dead letter with id {entry_id}", 1)
    out.print_json(json_dumps(REDACTOR.redact_obj(_entry_dict(entry))).decode())


def _select(
    loaded: LoadedConfig, ids: list[int] | None, all_: bool, flt: DeadLetterFilter, with_blocked: bool
) -> Callable[[Any], Coroutine[Any, Any, list[DeadLetter]]]:
    from tidesync.engine.replay import select_entries

    if not ids and not all_ and flt == DeadLetterFilter():
        raise ConfigError("say which entries: ids, a filter (--pipeline, --entity, --error, ...) or --all")

    async def pick(store: Any) -> list[DeadLetter]:
        return await select_entries(store, flt, with_blocked=with_blocked)

    return pick


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigArg,
    ids: Annotated[list[int] | None, typer.Argument(help="entry ids (or use a filter / --all)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every entry")] = False,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    with_blocked: Annotated[bool, typer.Option(help="also replay entries parked behind the chosen ones")] = True,
) -> None:
    """Write parked events again through the pipeline's sink; they leave the queue only when written."""
    from tidesync.engine.build import build_sink, build_transform
    from tidesync.engine.replay import replay

    loaded = _load(config)
    flt = guarded(lambda: _filter(pipeline, entity, error, contains, older_than, newer_than, ids))
    pick = guarded(lambda: _select(loaded, ids, all_, flt, with_blocked))

    async def main(store: Any) -> list[Any]:
        entries = await pick(store)
        groups: dict[tuple[str, str], list[DeadLetter]] = {}
        for e in entries:
            groups.setdefault((e.pipeline, e.sink), []).append(e)
        reports = []
        for (pipe, _sink), group in groups.items():
            spec = loaded.pipeline(pipe)
            report = await replay(store, build_sink(spec), group, transform=build_transform(spec.transforms))
            reports.append((pipe, report))
        return reports

    reports = run_async(lambda: _with_store(loaded, main))
    if not reports:
        out.print("nothing to replay")
        return
    failed = False
    for pipe, r in reports:
        out.print(
            f"{pipe}: written {len(r.written)}, skipped {len(r.skipped)}, failed {len(r.failed)},"
            f" still waiting {len(r.waiting)}",
            highlight=False,
        )
        for i, why in r.skipped:
            out.print(f"  skipped #{i}: {why}", highlight=False)
        for i, e in r.failed:
            failed = True
            out.print(f"  [red]failed[/] #{i}: {REDACTOR.redact(e)}", highlight=False)
    if failed:
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(
    config: ConfigArg,
    ids: Annotated[list[int] | None, typer.Argument(help="entry ids (or use a filter / --all)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every entry")] = False,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    with_blocked: Annotated[bool, typer.Option(help="also discard entries parked behind the chosen ones")] = False,
) -> None:
    """Remove parked events without writing them."""
    from tidesync.engine.replay import discard

    loaded = _load(config)
    flt = guarded(lambda: _filter(pipeline, entity, error, contains, older_than, newer_than, ids))
    pick = guarded(lambda: _select(loaded, ids, all_, flt, with_blocked))

    async def main(store: Any) -> int:
        return await discard(store, await pick(store))

    n = run_async(lambda: _with_store(loaded, main))
    out.print(f"discarded {n} dead letter(s)")


@app.command()
def drop(
    config: ConfigArg,
    pipeline: Annotated[str, typer.Argument(help="the pipeline (or sync) to remove", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Remove a stopped pipeline's replication slot, the publication tidesync created for it, its replication
    origins and its state (checkpoint, status, shadow rows, dead letters, kv entries, journal rows).

    Asks first on a terminal; without a terminal it needs --yes (else it lists what it would remove, exit 2).
    Refuses while the pipeline runs. The config keeps the pipeline: remove it there too, or its next run starts afresh.
    """
    from tidesync import drop as dropping

    loaded = _load(config, lazy=True)

    async def main(store: Any) -> list[str] | None:
        p = await dropping.plan(loaded, pipeline, store)
        if p.running:
            raise TidesyncError(f"{p.running}; stop it first (nothing was removed)")
        out.print(f"dropping {pipeline} removes:", highlight=False)
        for line in p.lines(store.url):
            out.print(f"  - {REDACTOR.redact(line)}", highlight=False, soft_wrap=True)
        for line in p.kept:
            out.print(f"  (kept: {REDACTOR.redact(line)})", highlight=False, soft_wrap=True)
        if not yes:
            if not sys.stdin.isatty():
                err.print("not a terminal: nothing removed; run again with --yes to remove these", highlight=False)
                raise typer.Exit(2)
            if not typer.confirm(f"remove all of this for {pipeline}?", default=False):
                err.print("nothing removed", highlight=False)
                raise typer.Exit(1)
        return await dropping.execute(loaded, p, store)

    done = run_async(lambda: _with_store(loaded, main))
    for line in done or []:
        out.print(f"[green]{REDACTOR.redact(line)}[/]", highlight=False, soft_wrap=True)


@webhook_app.command("enable")
def webhook_enable(
    config: ConfigArg,
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="the pipeline whose webhook sink to re-enable")],
) -> None:
    """Re-enable a webhook sink endpoint disabled by 410 Gone or by failing too long."""
    from tidesync.sinks.webhook import enable_endpoint

    loaded = _load(config, lazy=True)
    guarded(lambda: loaded.pipeline(pipeline))
    changed = run_async(lambda: _with_store(loaded, lambda s: enable_endpoint(s, pipeline)))
    out.print(f"{pipeline}: endpoint re-enabled" if changed else f"{pipeline}: endpoint was not disabled")


@app.command()
def reconcile(
    config: ConfigArg,
    pipeline: Annotated[str, typer.Argument(help="the pipeline whose source and destination to compare")],
    repair: Annotated[bool, typer.Option("--repair", help="write corrective events for the drift found")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=2, help="keys per top-level chunk")] = 2000,
    rate: Annotated[float | None, typer.Option("--rate", min=1, help="rows per second read from each side")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Compare a pipeline's source and destination by key and row hash; exit 1 while drift remains."""
    from tidesync.reconcile.config import ReconcileOptions
    from tidesync.reconcile.report import print_report
    from tidesync.reconcile.run import reconcile_pipeline

    loaded = _load(config)
    options = ReconcileOptions(repair=repair, chunk_size=chunk_size, rate=rate)
    report = run_async(lambda: reconcile_pipeline(loaded, pipeline, options))
    if as_json:
        sys.stdout.write(json_dumps(REDACTOR.redact_obj(report.as_dict())).decode() + "\n")
    else:
        print_report(out, report)
    raise typer.Exit(1 if report.unrepaired else 0)


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="changes per second to generate")] = 2000.0,
    duration: Annotated[float, typer.Option(help="seconds to run")] = 15.0,
    workdir: Annotated[Path, typer.Option(help="folder for the demo databases")] = Path(".tidesync/demo"),
    rows: Annotated[int, typer.Option(help="rows in the source table at start")] = 1000,
    live: Annotated[bool, typer.Option(help="show the live view")] = True,
) -> None:
    """SQLite → SQLite with generated changes, a live view, and a final source == destination check."""
    from tidesync.demo import run_demo

    if logging.getLogger().level < logging.WARNING:
        logging.getLogger().setLevel(logging.WARNING)  # the live view says what the log would
    ok = run_async(lambda: run_demo(workdir, rate=rate, duration=duration, rows=rows, console=out, live=live))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
