"""``tidesync demo``: SQLite to SQLite with generated changes and a live view."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tidesync.cli.common import out, run_async


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
