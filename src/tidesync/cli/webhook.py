"""``tidesync webhook enable``: webhook delivery endpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from tidesync.cli.common import ConfigArg, guarded, load, out, run_async, with_store

app = typer.Typer(no_args_is_help=True, help="Webhook delivery endpoints.")


@app.command("enable")
def webhook_enable(
    config: ConfigArg,
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="the pipeline whose webhook sink to re-enable")],
) -> None:
    """Re-enable a webhook sink endpoint disabled by 410 Gone or by failing too long."""
    from tidesync.sinks.webhook import enable_endpoint

    loaded = load(config, lazy=True)
    guarded(lambda: loaded.pipeline(pipeline))
    changed = run_async(lambda: with_store(loaded, lambda s: enable_endpoint(s, pipeline)))
    out.print(f"{pipeline}: endpoint re-enabled" if changed else f"{pipeline}: endpoint was not disabled")
