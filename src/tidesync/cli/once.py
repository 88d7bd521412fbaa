"""The summary ``tidesync run --once`` prints: one line per pipeline, and the exit code."""

from __future__ import annotations

from typing import Any

from tidesync.cli.common import err, out


def report_once(engine: Any, code: int) -> int:
    """Print what each pipeline's batch run did; 1 when any failed, dead-lettered, blocked or stopped short."""
    for runner in engine.runners:
        once = runner.once_run
        if runner.name in engine.failed or once is None:
            continue  # the failure was printed already
        if once.ok:
            out.print(once.summary(runner.name), highlight=False, markup=False, soft_wrap=True)
        else:
            err.print(once.summary(runner.name), highlight=False, markup=False, soft_wrap=True)
            code = code or 1
    return code
