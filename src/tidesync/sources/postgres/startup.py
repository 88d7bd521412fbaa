"""Where a source starts, decided from the slot, the checkpoint and the stored snapshot plan (pure).

==========================  =====================================================
situation                   start
==========================  =====================================================
no slot, no checkpoint      create the slot; with ``snapshot: initial`` read the
                            tables in the snapshot it exports, else stream
no slot, a checkpoint       SourceError: the changes since the checkpoint are
                            gone, and starting from scratch silently would hide it
slot, stream checkpoint     stream after the checkpoint (the snapshot is done)
slot, snapshot unfinished   read the rest in a fresh snapshot, as a new run
(or none taken yet)         (``snapshot.py`` explains why that is still correct)
slot, snapshot done/never   stream from the slot
==========================  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tidesync.errors import SourceError
from tidesync.event import Position
from tidesync.sources.postgres.snapshot import SnapshotPlan


@dataclass(frozen=True, slots=True)
class Start:
    create_slot: bool
    snapshot: Literal["exported", "fresh", "none"]
    plan: SnapshotPlan
    save_plan: bool


def plan_start(
    *,
    slot: str,
    slot_exists: bool,
    after: Position | None,
    saved: SnapshotPlan | None,
    mode: Literal["initial", "never"],
    pipeline: str,
) -> Start:
    if not slot_exists:
        if after is not None:
            raise SourceError(
                f"replication slot {slot!r} no longer exists, but pipeline {pipeline!r} has a checkpoint "
                f"({list(after)}): the changes since then are gone. tidesync will not silently start again "
                "from scratch. To take a new snapshot, reset the pipeline's checkpoint."
            )
        export = mode == "initial"
        return Start(True, "exported" if export else "none", SnapshotPlan(slot, run=1, complete=not export), True)
    if after is not None and after[0] > 0:  # a stream position: the snapshot is behind us
        plan = saved or SnapshotPlan(slot, complete=True)
        if plan.complete:
            return Start(False, "none", plan, False)
        plan.complete = True
        return Start(False, "none", plan, True)
    if mode == "never" or (saved is not None and saved.complete):
        return Start(False, "none", saved or SnapshotPlan(slot, complete=True), False)
    plan = saved or SnapshotPlan(slot)
    if after is not None:
        plan.run = max(plan.run, int(after[2]))  # (0, table, run, chunk, row): the new run sorts after the checkpoint
    plan.run += 1
    return Start(False, "fresh", plan, True)
