"""``billing worker`` with every log line kept (as ``verbose_worker``) and a slow bulk restore:
its consumer takes at most 5 records a fetch and waits 10 ms before each, so that a test can make
another worker join while it reads (``test_bulk_restore.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import streams.cli
import streams.quirks.bulk_restore as bulk_restore
import streams.worker
from commands.cli import main

FETCH_DELAY = 0.01  # seconds before each fetch


def slow_consumers(app: Any) -> Callable[[], Any]:
    """The worker's restore consumers, each fetch delayed by :data:`FETCH_DELAY`."""
    create = bulk_restore.consumer_factory(app)

    def slow() -> Any:
        consumer = create()
        fetch = consumer.getmany

        async def delayed(*partitions: Any, **options: Any) -> Any:
            await asyncio.sleep(FETCH_DELAY)
            return await fetch(*partitions, **options)

        consumer.getmany = delayed
        return consumer
    return slow


streams.cli.install_repeat_filter = lambda *_, **__: None
bulk_restore.FETCH_RECORDS = 5
streams.worker.consumer_factory = slow_consumers

if __name__ == "__main__":
    main()
