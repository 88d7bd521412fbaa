"""The initial snapshot's progress: a bar per table on a terminal, log lines elsewhere (:mod:`tidesync.progress`)."""

from __future__ import annotations

import logging

from rich.console import Console

from tidesync.progress import Progress


class SnapshotProgress:
    """One task per table; ``total`` is the planner's row estimate, so a table may end early or late."""

    def __init__(self, tables: list[tuple[str, int]], console: Console | None = None) -> None:
        self._progress = Progress("snapshot", console=console, logger=logging.getLogger("tidesync.sources.postgres"))
        self.console = self._progress.console
        for entity, estimate in tables:
            self._progress.add(entity, estimate)
        self.rows: dict[str, int] = {entity: 0 for entity, _ in tables}

    def advance(self, entity: str, rows: int, done: bool) -> None:
        self.rows[entity] = self.rows.get(entity, 0) + rows
        if entity in self._progress.tasks:
            self._progress.advance(entity, rows, done=done)

    def close(self) -> None:
        self._progress.close()
