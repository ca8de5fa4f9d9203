"""``billing worker`` with Faust's ``table_standby_replicas`` set from ``BENCH_STANDBY_REPLICAS``.

The worker hard-codes 0 (``streams/worker.py``) and has no option for it; this wrapper, run as
``python -m standby_worker worker ...`` by ``benchmarks/standby_bench.py``, replaces ``faust.App``
with one that sets it, then runs the CLI. It also leaves out the worker's repeat filter
(``runtime.logs``): the benchmark reads Faust's "Worker ready" of each rebalance, which the filter
would hide when it comes within 30 s of the previous one. For that benchmark only.
"""

from __future__ import annotations

import os
from typing import Any

import faust

import streams.cli
from commands.cli import main

_APP = faust.App


def app_with_standbys(*args: Any, **kwargs: Any) -> faust.App:
    return _APP(*args, **kwargs | {
        "table_standby_replicas": int(os.environ["BENCH_STANDBY_REPLICAS"])})


faust.App = app_with_standbys  # streams.worker calls faust.App(...) when the worker starts
streams.cli.install_repeat_filter = lambda *_, **__: None

if __name__ == "__main__":
    main()
