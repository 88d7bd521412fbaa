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

from tidesync.cli import common, demo, dlq, drop, reconcile, run, status, sync, webhook

__all__ = ["app", "main"]

# No locals in a --debug traceback: they hold resolved secrets and connection strings.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="tidesync: real-time data synchronization.",
)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
) -> None:
    common.configure(debug=debug, log_level=log_level)


# The order here is the order ``tidesync --help`` lists them in.
for command in (run.validate, run.run, run.serve, run.top, status.status, drop.drop, reconcile.reconcile, demo.demo):
    app.command()(command)
app.add_typer(dlq.app, name="dlq")
app.add_typer(webhook.app, name="webhook")
app.add_typer(sync.sync_app, name="sync")
app.add_typer(sync.conflicts_app, name="conflicts")


def main() -> None:
    """The ``tidesync`` console script."""
    app()
