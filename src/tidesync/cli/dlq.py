"""``tidesync dlq list|show|replay|discard``: inspect and act on the dead-letter queue."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any

import typer
from rich.table import Table

from tidesync.cli.common import (
    ConfigArg,
    ContainsOpt,
    EntityOpt,
    ErrorOpt,
    NewerOpt,
    OlderOpt,
    PipelineOpt,
    ago,
    dead_letter_filter,
    fail,
    guarded,
    load,
    out,
    run_async,
    with_store,
    write_json,
)
from tidesync.config import LoadedConfig
from tidesync.errors import ConfigError
from tidesync.event import json_dumps, to_jsonable
from tidesync.progress import Progress
from tidesync.secrets import REDACTOR
from tidesync.state.store import DeadLetter, DeadLetterFilter

app = typer.Typer(no_args_is_help=True, help="Inspect and act on the dead-letter queue.")


def _entry_dict(e: DeadLetter) -> dict[str, Any]:
    return {**e.summary(), "event": to_jsonable(e.event)}


@app.command("list")
def dlq_list(
    config: ConfigArg,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead letters, oldest first."""
    loaded = load(config, lazy=True)
    flt = guarded(lambda: dead_letter_filter(pipeline, entity, error, contains, older_than, newer_than, limit=limit))
    entries = run_async(lambda: with_store(loaded, lambda s: s.dlq_list(flt)))
    if as_json:
        write_json([_entry_dict(e) for e in entries])
        return
    table = Table(title=f"dead letters ({len(entries)})")
    for col in ("id", "pipeline", "entity", "key", "op", "class", "attempts", "last failure", "error"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            str(e.id),
            e.pipeline,
            e.entity,
            json_dumps(list(e.key)).decode(),
            e.event.op,
            e.error_class,
            str(e.attempts),
            ago(e.last_failed_at),
            REDACTOR.redact(e.error)[:120],
        )
    out.print(table)


@app.command("show")
def dlq_show(config: ConfigArg, entry_id: Annotated[int, typer.Argument(help="the entry id")]) -> None:
    """Show one dead letter with its whole event."""
    loaded = load(config, lazy=True)
    entry = run_async(lambda: with_store(loaded, lambda s: s.dlq_get(entry_id)))
    if entry is None:
        fail(f"no dead letter with id {entry_id}", 1)
    out.print_json(json_dumps(REDACTOR.redact_obj(_entry_dict(entry))).decode())


def _select(
    loaded: LoadedConfig, ids: list[int] | None, all_: bool, flt: DeadLetterFilter, with_blocked: bool
) -> Callable[[Any], Coroutine[Any, Any, list[DeadLetter]]]:
    from tidesync.engine.replay import select_entries

    if not ids and not all_ and flt == DeadLetterFilter():
        raise ConfigError("say which entries: ids, a filter (--pipeline, --entity, --error, ...) or --all")

    async def pick(store: Any) -> list[DeadLetter]:
        return await select_entries(store, flt, with_blocked=with_blocked)

    return pick


@app.command("replay")
def dlq_replay(
    config: ConfigArg,
    ids: Annotated[list[int] | None, typer.Argument(help="entry ids (or use a filter / --all)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every entry")] = False,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    with_blocked: Annotated[bool, typer.Option(help="also replay entries parked behind the chosen ones")] = True,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="no progress bar (shown only on a terminal; else log lines)")
    ] = False,
) -> None:
    """Write parked events again through the pipeline's sink; they leave the queue only when written."""
    loaded = load(config)
    flt = guarded(lambda: dead_letter_filter(pipeline, entity, error, contains, older_than, newer_than, ids))
    pick = guarded(lambda: _select(loaded, ids, all_, flt, with_blocked))

    with Progress("replay", unit="letters", enabled=not no_progress) as progress:
        reports = run_async(lambda: with_store(loaded, lambda store: replay_chosen(loaded, store, pick, progress)))
    if not reports:
        out.print("nothing to replay")
        return
    failed = False
    for pipe, r in reports:
        out.print(
            f"{pipe}: written {len(r.written)}, skipped {len(r.skipped)}, failed {len(r.failed)},"
            f" still waiting {len(r.waiting)}",
            highlight=False,
        )
        for i, why in r.skipped:
            out.print(f"  skipped #{i}: {why}", highlight=False)
        for i, e in r.failed:
            failed = True
            out.print(f"  [red]failed[/] #{i}: {REDACTOR.redact(e)}", highlight=False)
    if failed:
        raise typer.Exit(1)


async def replay_chosen(
    loaded: LoadedConfig,
    store: Any,
    pick: Callable[[Any], Coroutine[Any, Any, list[DeadLetter]]],
    progress: Progress | None = None,
) -> list[Any]:
    """Replay the entries ``pick`` chooses, per pipeline and sink; ``progress`` counts letters per pipeline."""
    from tidesync.engine.build import build_sink, build_transform
    from tidesync.engine.replay import replay

    entries = await pick(store)
    groups: dict[tuple[str, str], list[DeadLetter]] = {}
    for e in entries:
        groups.setdefault((e.pipeline, e.sink), []).append(e)
    left = {pipe: 0 for pipe, _ in groups}
    for (pipe, _sink), group in groups.items():
        left[pipe] += len(group)
    if progress is not None:
        for pipe, total in left.items():
            progress.add(pipe, total)
    reports = []
    for (pipe, _sink), group in groups.items():
        spec = loaded.pipeline(pipe)
        counted = partial(progress.advance, pipe) if progress is not None else None
        report = await replay(
            store, build_sink(spec), group, transform=build_transform(spec.transforms), counted=counted
        )
        reports.append((pipe, report))
        left[pipe] -= len(group)
        if progress is not None and not left[pipe]:
            progress.advance(pipe, 0, done=True)
    return reports


@app.command("discard")
def dlq_discard(
    config: ConfigArg,
    ids: Annotated[list[int] | None, typer.Argument(help="entry ids (or use a filter / --all)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every entry")] = False,
    pipeline: PipelineOpt = None,
    entity: EntityOpt = None,
    error: ErrorOpt = None,
    contains: ContainsOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    with_blocked: Annotated[bool, typer.Option(help="also discard entries parked behind the chosen ones")] = False,
) -> None:
    """Remove parked events without writing them."""
    from tidesync.engine.replay import discard

    loaded = load(config)
    flt = guarded(lambda: dead_letter_filter(pipeline, entity, error, contains, older_than, newer_than, ids))
    pick = guarded(lambda: _select(loaded, ids, all_, flt, with_blocked))

    async def main(store: Any) -> int:
        return await discard(store, await pick(store))

    n = run_async(lambda: with_store(loaded, main))
    out.print(f"discarded {n} dead letter(s)")
