"""Opening a pipeline's sink: a destination that is not there yet is waited out, not a failed start.

A destination that is down (:class:`~tidesync.errors.TransientError`) shows as
``retrying``; one that refuses the pipeline (:class:`~tidesync.errors.SystemicError`:
authentication failed, database missing) shows as ``blocked`` with one ERROR
line. Both are probed on the pipeline's probe policy, without limit (nothing
has been read yet, so nothing waits but the start), so a rotated password or a
created database is picked up without a restart. ``stop`` ends the wait.
``on_refused`` hears of each refusal after the view showed it (a batch run
stops on the first rather than wait).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

from tidesync.clock import Clock
from tidesync.engine.observing import PipelineView
from tidesync.errors import SystemicError, TransientError
from tidesync.protocols import Context, Sink
from tidesync.retry import Failure, RetryPolicy, RetryStopped


def _not_there_yet(exc: Exception) -> bool:
    return isinstance(exc, (TransientError, SystemicError))


async def open_sink(
    sink: Sink,
    ctx: Context,
    probe: RetryPolicy,
    clock: Clock,
    view: PipelineView,
    stop: asyncio.Event,
    rng: random.Random | None = None,
    on_refused: Callable[[], None] | None = None,
) -> bool:
    """Open ``sink``, waiting out a destination that is down or refuses; False when ``stop`` came first."""
    since = clock.time()

    async def failed(failure: Failure) -> None:
        await view.sink_refused(failure, since)
        if on_refused is not None and isinstance(failure.error, SystemicError):
            on_refused()

    retry = replace(probe, max_attempts=None, max_age=None).attempts(
        clock, _not_there_yet, on_retry=failed, stop=stop, rng=rng
    )
    try:
        async for attempt in retry:
            with attempt:
                await sink.open(ctx)
    except RetryStopped:
        return False
    view.sink_opened(retry.number)
    return True
