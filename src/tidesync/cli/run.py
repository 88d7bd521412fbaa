"""``tidesync validate|run|serve|top``: check a config, run its pipelines, watch them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from tidesync.cli.common import ConfigArg, err, load, out, run_async
from tidesync.errors import ConfigError
from tidesync.secrets import REDACTOR


def validate(
    config: ConfigArg,
    show: Annotated[bool, typer.Option("--show", help="print the config with secrets masked")] = False,
    check: Annotated[bool, typer.Option("--check", help="connect to every endpoint; exit 1 on a failed check")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --check: machine-readable output")] = False,
) -> None:
    """Check a config file; exit 2 with the key and line of every problem."""
    loaded = load(config)
    if check:
        from tidesync.checks.render import check_command

        raise typer.Exit(run_async(lambda: check_command(loaded, out, as_json=as_json)))
    if show:
        out.print_json(json.dumps(loaded.redacted(), default=str))
    names = ", ".join(p.name for p in loaded.pipelines) or "none"
    syncs = f"; {len(loaded.syncs)} sync(s): {', '.join(s.name for s in loaded.syncs)}" if loaded.syncs else ""
    out.print(f"[green]ok[/]: {config} — {len(loaded.pipelines)} pipeline(s): {names}{syncs}", highlight=False)


def handle_stop_signals(engine: Any) -> None:
    """First SIGINT/SIGTERM: drain and stop. A second one: leave at once (as safe as a crash). SIGUSR1: log
    every task's stack (:func:`~tidesync.engine.engine.dump_tasks`)."""
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if engine.stop.is_set():
            err.print(f"{sig.name} again: stopping without draining", highlight=False)
            os._exit(128 + int(sig))
        engine.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    from tidesync.engine.engine import dump_tasks

    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)  # what every task waits on, in the log


def _run_engine(config: Path, pipeline: list[str] | None, force_api: bool, once: bool = False) -> None:
    from tidesync.engine.build import build_engine
    from tidesync.engine.collector import tune_gc

    loaded = load(config)

    async def main() -> int:
        from tidesync.api.wanted import api_wanted
        from tidesync.observe.monitor import Monitor
        from tidesync.observe.recent import install as keep_recent_errors
        from tidesync.reconcile.schedule import ReconcileSchedules

        keep_recent_errors()
        engine = build_engine(loaded, pipeline, once=once)
        tune_gc()  # after start-up, which it freezes
        if not engine.runners and not engine.syncs:
            raise ConfigError("no enabled pipeline or sync to run", path=str(config))
        # Signals are handled for the whole life of the command, not only while the
        # pipelines run: a SIGTERM during start-up or shutdown still drains cleanly.
        handle_stop_signals(engine)
        monitor = Monitor.for_config(loaded, engine)
        api = None
        if api_wanted(loaded, engine, force=force_api):
            from tidesync.api.server import build_api

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
        if once:
            from tidesync.cli.once import report_once

            code = report_once(engine, code)
        return code

    raise typer.Exit(run_async(main))


def run(
    config: ConfigArg,
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="run only these")] = None,
    api: Annotated[bool, typer.Option("--api", help="serve the admin API and dashboard (needs api.token)")] = False,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="a batch run: read each pipeline up to its source's end as of now, apply, checkpoint and exit "
            "(non-zero, with a summary of why, when anything dead-lettered or blocked)",
        ),
    ] = False,
) -> None:
    """Run the pipelines of a config until SIGINT/SIGTERM (finishes the batch in flight, checkpoints, exits 0)."""
    _run_engine(config, pipeline, api, once)


def serve(
    config: ConfigArg,
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="run only these")] = None,
) -> None:
    """Run the pipelines plus the admin API, /metrics and the dashboard on api.listen (needs api.token)."""
    _run_engine(config, pipeline, True)


def top(
    config: ConfigArg,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one view and exit")] = False,
) -> None:
    """A live view of throughput, latency, lag and DLQ per pipeline (from the running server, else the state store)."""
    from tidesync.observe.top import run_top

    loaded = load(config)
    run_async(lambda: run_top(loaded, out, interval=interval, once=once))
