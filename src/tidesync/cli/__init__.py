"""The ``tidesync`` command line: ``app`` and ``main``, with every command group registered.

Exit codes: 0 success, 1 a runtime failure (the message says which pipeline and
why), 2 a configuration error (the message names the key and the file line).
No command prints a traceback unless ``--debug`` is given.

One module per command group; what they share is in :mod:`tidesync.cli.common`,
which they import instead of this package, so no import goes in a circle.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tidesync.cli import cluster, common, demo, dlq, drop, init, reconcile, run, schema, status, sync, webhook

__all__ = ["app", "main"]

# No locals in a --debug traceback: they hold resolved secrets and connection strings.
# add_completion: ``tidesync --install-completion`` (bash, zsh, fish, PowerShell) and ``--show-completion``.
app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="tidesync: real-time data synchronization.",
)


def _print_version(value: bool) -> None:
    if value:
        import tidesync

        typer.echo(f"tidesync {tidesync.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_print_version, is_eager=True)
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
    log_format: Annotated[str, typer.Option("--log-format", help="text, or json: one object per line")] = "text",
) -> None:
    common.configure(debug=debug, log_level=log_level, log_format=log_format)


# The order here is the order ``tidesync --help`` lists them in.
for command in (run.validate, run.run, run.serve, run.top, status.status, drop.drop, reconcile.reconcile, demo.demo):
    app.command()(command)
app.command()(schema.schema)
app.command()(init.init)
app.command()(cluster.replay)
app.add_typer(dlq.app, name="dlq")
app.add_typer(webhook.app, name="webhook")
app.add_typer(sync.sync_app, name="sync")
app.add_typer(sync.conflicts_app, name="conflicts")


def main() -> None:
    """The ``tidesync`` console script (and ``python -m tidesync.cli``: the same name, so completion matches)."""
    app(prog_name="tidesync")
