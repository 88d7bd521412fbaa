"""``tidesync init``: write a commented starter config for one source and one sink."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tidesync.cli.common import err, fail, guarded, out
from tidesync.registry import REGISTRY, Kind


def on_terminal() -> bool:
    return sys.stdin.isatty()


def _ask(kind: Kind, given: str | None) -> str:
    """``given``, else the type asked for on a terminal; without one the flag is required (exit 2)."""
    if given is not None:
        return given
    names = REGISTRY.names(kind)
    if not on_terminal():
        fail(f"give --{kind} (one of: {', '.join(names)}); there is no terminal to ask on", 2)
    err.print(f"{kind} types: {', '.join(names)}", highlight=False, soft_wrap=True)
    while True:
        choice = str(typer.prompt(f"{kind} type"))
        if choice in names:
            return choice
        err.print(f"no {kind} type {choice!r}", highlight=False)


def init(
    config: Annotated[Path, typer.Argument(help="the config file to write", dir_okay=False)] = Path("tidesync.yaml"),
    source: Annotated[
        str | None, typer.Option("--source", help="source type (asked on a terminal if not given)")
    ] = None,
    sink: Annotated[str | None, typer.Option("--sink", help="sink type (asked on a terminal if not given)")] = None,
    name: Annotated[str | None, typer.Option("--name", help="the pipeline's name (default: SOURCE-to-SINK)")] = None,
) -> None:
    """Write a starter config: the source's and sink's required keys with placeholders, common options as comments.

    Refuses to overwrite an existing file.
    """
    from tidesync.starter import render_starter

    if config.exists():
        fail(f"{config} exists; not overwriting it (give another file name, or remove it)", 1)
    text = guarded(lambda: render_starter(_ask("source", source), _ask("sink", sink), name))
    try:
        with config.open("x") as f:  # "x": a file created meanwhile is not overwritten either
            f.write(text)
    except FileExistsError:
        fail(f"{config} exists; not overwriting it (give another file name, or remove it)", 1)
    out.print(
        f"wrote {config}: fill in CHANGE-ME and the ${{env:...}} variables, then: tidesync validate {config} --check",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
