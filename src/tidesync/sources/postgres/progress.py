"""A progress bar for the initial snapshot (rich), shown only on a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SnapshotProgress:
    """One bar per table; ``total`` is the planner's row estimate, so the bar may end early or late."""

    def __init__(self, tables: list[tuple[str, int]], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("snapshot {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=False,
        )
        self._tasks: dict[str, Any] = {
            entity: self._progress.add_task(entity, total=estimate or None) for entity, estimate in tables
        }
        self.rows: dict[str, int] = dict.fromkeys(self._tasks, 0)
        self._progress.start()

    def advance(self, entity: str, rows: int, done: bool) -> None:
        self.rows[entity] = self.rows.get(entity, 0) + rows
        task = self._tasks.get(entity)
        if task is None:
            return
        if done:
            self._progress.update(task, completed=self.rows[entity], total=self.rows[entity])
        else:
            self._progress.advance(task, rows)

    def close(self) -> None:
        self._progress.stop()
