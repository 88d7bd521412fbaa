"""``tidesync schema``: print the config's JSON Schema, for editors (docs/schema.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from tidesync.cli.common import err, guarded


def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write it to this file instead of stdout", dir_okay=False)
    ] = None,
    indent: Annotated[int, typer.Option("--indent", min=0, help="spaces per indent level (0: one line)")] = 2,
) -> None:
    """Print a JSON Schema (draft 2020-12) of the config file, every connector's keys included."""
    from tidesync.config_schema import build_schema

    text = guarded(lambda: json.dumps(build_schema(), indent=indent or None, ensure_ascii=False)) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    err.print(f"wrote {output}", highlight=False)
