"""What every ``tidesync`` command shares: loading the config, turning errors into exit codes, the consoles.

Exit codes: 0 success, 1 a runtime failure (the message says which pipeline and
why), 2 a configuration error (the message names the key and the file line).
No command prints a traceback unless ``--debug`` is given.

Everything a command prints goes through :data:`out`/:data:`err` or
:func:`write_json`, which mask every secret the config named (see
:mod:`tidesync.secrets`): a command need not remember to.

The command modules import from here, never from :mod:`tidesync.cli` itself
(which imports them to register their commands), so there is no import circle.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from tidesync.config import LoadedConfig, load_config
from tidesync.errors import ConfigError, TidesyncError
from tidesync.secrets import REDACTOR
from tidesync.state.store import DeadLetterFilter

T = TypeVar("T")


class _RedactingStream:
    """``sys.stdout``/``sys.stderr`` as they are at each write (a test runner swaps them), secrets masked."""

    def __init__(self, name: str) -> None:
        self._name = name

    def write(self, text: str) -> int:
        return int(getattr(sys, self._name).write(REDACTOR.redact(text)))

    def __getattr__(self, attr: str) -> Any:
        return getattr(getattr(sys, self._name), attr)


class RedactingConsole(Console):
    """A console that masks secrets in what it is given (before Rich wraps a line and could split a
    value) and again in what it writes."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(REDACTOR.redact(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def print_json(self, json: str | None = None, *, data: Any = None, **kwargs: Any) -> None:
        super().print_json(
            REDACTOR.redact(json) if json is not None else None,
            data=REDACTOR.redact_obj(data) if data is not None else None,
            **kwargs,
        )


out = RedactingConsole(file=_RedactingStream("stdout"))  # type: ignore[arg-type]
err = RedactingConsole(file=_RedactingStream("stderr"), stderr=True)  # type: ignore[arg-type]


def write_json(value: Any) -> None:
    """``value`` as one line of JSON on stdout (``--json`` output), secrets masked."""
    from tidesync.event import json_dumps

    sys.stdout.write(json_dumps(REDACTOR.redact_obj(value)).decode() + "\n")


ConfigArg = Annotated[Path, typer.Argument(help="the YAML config file", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

_debug = False


def configure(*, debug: bool, log_level: str, log_format: str = "text") -> None:
    """Apply the global options: ``--debug`` (tracebacks instead of messages), the log level and format."""
    from tidesync.observe.logs import configure_logging

    global _debug
    _debug = debug
    if log_format not in ("text", "json"):
        fail(f"--log-format {log_format!r}: use text or json", 2)
    configure_logging(getattr(logging, log_level.upper(), logging.INFO), "json" if log_format == "json" else "text")


def fail(message: str, code: int) -> None:
    """Print ``message`` (secrets masked) on stderr and exit with ``code``; never returns."""
    err.print(f"[bold red]error:[/] {REDACTOR.redact(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run a command body, turning errors into a message and an exit code."""
    try:
        return fn()
    except typer.Exit:
        raise
    except ConfigError as exc:
        fail(str(exc), 2)
    except TidesyncError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        if _debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (run with --debug for a traceback)", 1)
    raise AssertionError("unreachable")


def run_async(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` of a command body, :func:`guarded`."""
    return guarded(lambda: asyncio.run(coro_fn()))


def load(path: Path, *, lazy: bool = False) -> LoadedConfig:
    """Load the config. ``lazy``: for commands that only read the state store, a secret
    reference that cannot be read is left unresolved instead of failing the load (the
    state URL's own secret is still needed); see :func:`tidesync.config.load_config`."""
    return guarded(lambda: load_config(path, secrets="lazy" if lazy else "eager"))


async def with_store(loaded: LoadedConfig, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """``fn(store)`` on the config's state store, opened for the call and closed after it."""
    from tidesync.state import open_state_store

    store = open_state_store(loaded.state_url)
    await store.open()
    try:
        return await fn(store)
    finally:
        await store.close()


def ago(ts: float | None) -> str:
    """A timestamp as a short distance from now: ``3.2s ago``, ``4.0m ago``, ``in 1.5s``, ``-`` for none."""
    if not ts:
        return "-"
    d = time.time() - ts
    if d < 0:
        return f"in {-d:.1f}s"
    return f"{d:.1f}s ago" if d < 120 else f"{d / 60:.1f}m ago"


def parse_age(text: str | None) -> float | None:
    """Seconds from ``30s``, ``10m``, ``2h``, ``1d`` or a bare number; a :class:`ConfigError` for anything else."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise ConfigError(f"cannot read age {text!r}; use e.g. 30s, 10m, 2h, 1d") from None


# --- dead-letter filters (the dlq commands) -------------------------------------

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="only this pipeline")]
EntityOpt = Annotated[str | None, typer.Option("--entity", "-e", help="only this entity")]
ErrorOpt = Annotated[str | None, typer.Option("--error", help="error class (permanent, transient, transform, blocked)")]
ContainsOpt = Annotated[str | None, typer.Option("--contains", help="error message contains this text")]
OlderOpt = Annotated[str | None, typer.Option("--older-than", help="last failure older than e.g. 30s, 10m, 2h, 1d")]
NewerOpt = Annotated[str | None, typer.Option("--newer-than", help="last failure within e.g. 10m, 1h")]


def dead_letter_filter(
    pipeline: str | None,
    entity: str | None,
    error: str | None,
    contains: str | None,
    older: str | None,
    newer: str | None,
    ids: list[int] | None = None,
    limit: int | None = None,
) -> DeadLetterFilter:
    """The filter the dlq options describe; ages are measured back from now."""
    now = time.time()
    o, n = parse_age(older), parse_age(newer)
    return DeadLetterFilter(
        pipeline=pipeline,
        entity=entity,
        error_class=error,
        error_contains=contains,
        older_than=now - o if o is not None else None,
        newer_than=now - n if n is not None else None,
        ids=tuple(ids) if ids else None,
        limit=limit,
    )
