"""``tidesync drop``: remove a stopped pipeline's slot, publication, origins and state."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tidesync.cli.common import ConfigArg, err, load, out, run_async, with_store
from tidesync.errors import TidesyncError
from tidesync.secrets import REDACTOR


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

    loaded = load(config, lazy=True)

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

    done = run_async(lambda: with_store(loaded, main))
    for line in done or []:
        out.print(f"[green]{REDACTOR.redact(line)}[/]", highlight=False, soft_wrap=True)
