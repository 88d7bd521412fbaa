"""tidesync run's collector settings: set, and start-up's garbage collected before the rest is frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from tidesync.engine.collector import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_tune_gc_sets_the_thresholds_and_freezes_only_what_is_alive(restored_gc: None) -> None:
    gc.collect()
    frozen = gc.get_freeze_count()
    garbage = _Cycle()
    ref = weakref.ref(garbage)
    del garbage  # unreachable, alive only through its cycle until a collection
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > frozen
    assert ref() is None  # collected, not frozen for the life of the process
