"""The worker freezes its start-up heap out of the garbage collector and collects less often
(``streams/gc_tuning.py``); the test puts CPython's settings back for the rest of the session."""

from __future__ import annotations

import gc

from streams.gc_tuning import THRESHOLDS, tune_garbage_collector


def test_the_start_up_heap_is_frozen_and_collections_are_rarer() -> None:
    defaults = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert THRESHOLDS[0] > defaults[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*defaults)
