"""``billing worker`` for ``benchmarks/standby_bench.py``: every log line let through, and, on
request, Faust's own standby seek.

It leaves out the worker's repeat filter (``runtime.logs``): the benchmark reads Faust's "Worker
ready" of each rebalance, which the filter would hide when it comes within 30 s of the previous
one. With ``BENCH_UNGUARDED_SEEK=1`` it also leaves out
:func:`streams.quirks.faust_internals.guard_recovery_seeks`, so the benchmark can show the crash
that guard prevents (``--unguarded``). The number of standby replicas is the worker's own setting
(``BILLING_STANDBY_REPLICAS``). For that benchmark only; run as ``python -m standby_worker worker
...``.
"""

from __future__ import annotations

import os

import streams.cli
import streams.worker
from commands.cli import main

streams.cli.install_repeat_filter = lambda *_, **__: None
if os.environ.get("BENCH_UNGUARDED_SEEK") == "1":
    streams.worker.guard_recovery_seeks = lambda app: None

if __name__ == "__main__":
    main()
