"""``tidesync replay``: a sink group of a ``cluster:`` config re-applies its partitions from a sequence or time."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from tidesync.cli.common import ConfigArg, fail, load, out, run_async, with_store, write_json


def replay(
    config: ConfigArg,
    group: Annotated[str, typer.Argument(help="the sink group: the pipeline, or PIPELINE.SINK of a fan-out pipeline")],
    from_sequence: Annotated[
        int | None, typer.Option("--from-sequence", min=1, help="re-apply from this stream sequence on")
    ] = None,
    from_time: Annotated[
        dt.datetime | None,
        typer.Option("--from-time", help="re-apply the messages stored at or after this time (UTC unless given)"),
    ] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the workers to let go of each partition")] = 60,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Re-apply a sink group's partitions from the cluster's stream (a sequence or a time) to its sink.

    The running workers let go of the group's partitions, each partition's checkpoint is rewound, and the
    workers take them back and apply again from there. Idempotent for SQL sinks: they skip what they hold.
    """
    from tidesync.engine.cluster import plan
    from tidesync.engine.cluster_replay import rewind
    from tidesync.engine.lease import process_owner

    loaded = load(config)
    model = loaded.model
    if model.cluster is None or model.lease is None:
        fail("replay re-applies from a cluster's stream: this config has no `cluster:` section", 2)
        return
    works = [w for w in plan(model.cluster, loaded.pipelines) if w.role == "apply" and w.group == group]
    if not works:
        groups = sorted({w.group for w in plan(model.cluster, loaded.pipelines) if w.role == "apply"})
        fail(f"no sink group {group!r} in the cluster; there are: {', '.join(groups)}", 2)
        return
    if (from_sequence is None) == (from_time is None):
        fail("give one of --from-sequence or --from-time", 2)
        return
    when = from_time.replace(tzinfo=dt.UTC) if from_time is not None and from_time.tzinfo is None else from_time
    cluster, ttl = model.cluster, model.lease.ttl_seconds
    done = run_async(
        lambda: with_store(
            loaded,
            lambda store: rewind(
                store, cluster, works, process_owner(), sequence=from_sequence, time=when, ttl=ttl, wait=wait
            ),
        )
    )
    rows = [{"pipeline": r.pipeline, "partition": r.partition, "before": r.before, "after": r.after} for r in done]
    if as_json:
        write_json(rows)
        return
    table = Table(title=f"replay of {group}: partition checkpoints (stream sequences)")
    for col in ("partition", "was", "now", ""):
        table.add_column(col)
    for r in done:
        note = "rewound: the workers re-apply from here" if r.after != r.before else "already before the start"
        table.add_row(str(r.partition), str(r.before or "-"), str(r.after if r.after is not None else "-"), note)
    out.print(table)
