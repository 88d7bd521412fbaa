"""Per-key order for the publishing sinks (mqtt, rabbitmq, nats): one write's messages, planned in waves.

The events of one key are never in flight together: the n-th event of each
key goes in wave n, and a wave is published only when every publish of the
one before it was answered (:func:`publish`). Within a wave at most
``max_in_flight`` publishes await their answer at once.

A failure blocks its key for the rest of the write:

- an event that cannot be made into a message (encoded, routed) fails
  permanently, and every later event of its key fails ``blocked`` behind it
  without being planned (:func:`plan`, :func:`messages`);
- after a transient or systemic publish failure nothing more is published:
  every message of the later waves fails transiently (the engine retries the
  whole write, so no later event of a key overtakes an earlier one);
- a message of a key whose publish failed permanently in an earlier wave is
  not published: it fails ``blocked`` behind that failure.

:func:`raise_failures` turns the failures into the write's outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tidesync.errors import (
    DeliveryError,
    PartialBatchError,
    PermanentError,
    SystemicError,
    TransientError,
)
from tidesync.event import ChangeEvent, Key
from tidesync.sinks.blocked import behind

M = TypeVar("M")
KeyOf = tuple[str, Key]  # (entity, key): what per-key order is kept for


def messages(
    events: Sequence[ChangeEvent],
    make: Callable[[int, ChangeEvent], M],
    failures: dict[int, DeliveryError],
    blocked: dict[KeyOf, DeliveryError],
    unusable: Callable[[Exception], str],
) -> Iterator[tuple[int, KeyOf, M]]:
    """The message of each event (``make(index, event)``), with the event's index and key, in the order of ``events``.

    An event of a key in ``blocked`` fails behind it (into ``failures``, by
    index). When ``make`` raises TypeError, ValueError or OverflowError the
    event fails permanently with the message ``unusable(exc)`` and blocks its key.
    """
    for i, e in enumerate(events):
        k = (e.entity, e.key)
        if k in blocked:
            failures[i] = behind(blocked[k])
            continue
        try:
            msg = make(i, e)
        except (TypeError, ValueError, OverflowError) as exc:
            failures[i] = blocked[k] = PermanentError(unusable(exc))
            continue
        yield i, k, msg


@dataclass(slots=True)
class Plan(Generic[M]):
    """One write's messages in waves (no two of one key in a wave), and its failures so far by event index."""

    waves: list[list[tuple[int, KeyOf, M]]] = field(default_factory=list)
    failures: dict[int, DeliveryError] = field(default_factory=dict)
    blocked: dict[KeyOf, DeliveryError] = field(default_factory=dict)  # keys whose message could not be made


def plan(
    events: Sequence[ChangeEvent], make: Callable[[ChangeEvent], M], unusable: Callable[[Exception], str]
) -> Plan[M]:
    """The waves of one write: the n-th event of each key in wave n (see :func:`messages` for ``unusable``)."""
    out: Plan[M] = Plan()
    depth: dict[KeyOf, int] = {}
    for i, k, msg in messages(events, lambda _, e: make(e), out.failures, out.blocked, unusable):
        n = depth.get(k, 0)
        depth[k] = n + 1
        if n == len(out.waves):
            out.waves.append([])
        out.waves[n].append((i, k, msg))
    return out


async def publish(
    planned: Plan[M], send: Callable[[M], Awaitable[DeliveryError | None]], max_in_flight: int
) -> DeliveryError | None:
    """Publish the waves in order (``send`` one message: its failure, or None); the failure that stopped them.

    Failures go into ``planned.failures``. A transient or systemic failure
    stops the write: the later waves are not published (None: none did).
    """
    failures = planned.failures
    failed: dict[KeyOf, DeliveryError] = {}  # keys whose message failed permanently in an earlier wave
    limit = asyncio.Semaphore(max_in_flight)

    async def one(msg: M) -> DeliveryError | None:
        async with limit:
            return await send(msg)

    down: DeliveryError | None = None
    for wave in planned.waves:
        if down is not None:
            for i, _, _ in wave:
                failures[i] = TransientError(f"not published after an earlier failure ({down})")
            continue
        live = []
        for i, k, msg in wave:
            if k in failed:
                failures[i] = behind(failed[k])
            else:
                live.append((i, k, msg))
        if len(live) == 1:
            results = [await send(live[0][2])]
        else:
            results = list(await asyncio.gather(*(one(msg) for _, _, msg in live)))
        for (i, k, _), err in zip(live, results, strict=True):
            if err is not None:
                failures[i] = failed[k] = err
                if (err.transient or isinstance(err, SystemicError)) and down is None:
                    down = err
    return down


def raise_failures(failures: dict[int, DeliveryError], total: int, verb: str) -> None:
    """The outcome of a write of ``total`` events: nothing when none failed; else TransientError or PartialBatchError.

    TransientError when every failure is transient (the message says how many
    were not ``verb``: acknowledged, confirmed, acked), else PartialBatchError
    with the failures by event index.
    """
    if not failures:
        return
    if all(e.transient for e in failures.values()):
        first = next(iter(failures.values()))
        raise TransientError(f"{len(failures)} of {total} event(s) not {verb}: {first}")
    raise PartialBatchError(failures)
