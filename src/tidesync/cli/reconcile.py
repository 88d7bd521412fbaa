"""``tidesync reconcile``: compare a pipeline's source and destination, and repair the drift."""

from __future__ import annotations

from typing import Annotated

import typer

from tidesync.cli.common import ConfigArg, load, out, run_async, write_json


def reconcile(
    config: ConfigArg,
    pipeline: Annotated[str, typer.Argument(help="the pipeline whose source and destination to compare")],
    repair: Annotated[bool, typer.Option("--repair", help="write corrective events for the drift found")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=2, help="keys per top-level chunk")] = 2000,
    rate: Annotated[float | None, typer.Option("--rate", min=1, help="rows per second read from each side")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="no progress bar (shown only on a terminal; else log lines)")
    ] = False,
) -> None:
    """Compare a pipeline's source and destination by key and row hash; exit 1 while drift remains."""
    from tidesync.progress import Progress
    from tidesync.reconcile.config import ReconcileOptions
    from tidesync.reconcile.report import print_report
    from tidesync.reconcile.run import reconcile_pipeline

    loaded = load(config)
    options = ReconcileOptions(repair=repair, chunk_size=chunk_size, rate=rate)
    with Progress("reconcile", enabled=not no_progress) as progress:
        report = run_async(lambda: reconcile_pipeline(loaded, pipeline, options, progress=progress))
    if as_json:
        write_json(report.as_dict())
    else:
        print_report(out, report)
    raise typer.Exit(1 if report.unrepaired else 0)
