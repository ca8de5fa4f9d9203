"""A bare Faust agent that only counts the input events: the baseline of the worker's rate.

It runs the worker's Faust (same version, same broker, the same four input topics, raw bytes,
acknowledging each event) and does nothing per event but count, so the ratio worker / this is
what the worker's own work costs on top of Faust's per-event machinery. It prints one JSON line,
``{"events": N, "seconds": S}`` from its first event to its ``total``-th, and exits.

    python -m benchmarks.faust_count APP_ID TOTAL     # settings from BILLING_* variables
"""

from __future__ import annotations

import os
import sys
import time

import faust
import orjson

from runtime.settings import load_settings


def main(app_id: str, total: int) -> None:
    settings = load_settings()
    app = faust.App(app_id, broker=[f"kafka://{address}" for address in
                                    settings.kafka_bootstrap.split(",")],
                    broker_credentials=settings.kafka_security.faust_credentials(),
                    store="memory://", autodiscover=False, web_enabled=False,
                    consumer_auto_offset_reset="earliest", key_serializer="raw",
                    value_serializer="raw", topic_partitions=settings.partitions,
                    datadir=f"/tmp/{app_id}")
    inputs = app.topic(*settings.topics.inputs, key_serializer="raw", value_serializer="raw")

    @app.agent(inputs, name="count")
    async def count(stream: faust.Stream) -> None:
        seen, started = 0, 0.0
        async for _ in stream.events():
            if not seen:
                started = time.perf_counter()
            seen += 1
            if seen == total:
                print(orjson.dumps({"events": seen - 1,
                                    "seconds": time.perf_counter() - started}).decode(),
                      flush=True)
                os._exit(0)  # the figure is out; Faust's graceful stop takes seconds

    # At "info", like the worker in the benchmarks: at "warning" Faust's terminal spinner sets the
    # root logger to DEBUG and every debug call builds a record (this agent ran 1.10x faster
    # without it, 4 rounds; BENCHMARKS.md, Pipeline, session 11).
    faust.Worker(app, loglevel="info", redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
