"""End-to-end latency of the pipeline: a usage's send to the ``usage_paused`` it causes, and
to ``may_send`` turning false in a gateway's :class:`~runtime.account_status.AccountStatusClient`.

A private pipeline (own topics, own app id) on the running broker gets one ``billing worker``.
Set-up events open two kinds of accounts and are applied before anything is timed:

- **background** accounts (enterprise, postpaid, a payment method on file, no budget): their usage
  is the steady load and never changes their status;
- **trigger** accounts (self-serve, prepaid, the $1.00 free credit, a payment method on file): each
  receives one usage costing $1.80, which exhausts the credit, so the worker emits a
  ``usage_paused`` whose ``cause_event_id`` is that usage's ``event_id``.

Then, for each phase (a rate, and a side rate on the payments and accounts topics), a producer
process (aiokafka, ``acks=all``, idempotent) publishes background usage at a steady rate for
``--seconds``, with the triggers spread evenly after ``--warmup`` seconds. This process notes, per
trigger, when three things happen (same host clock as the producer):

- ``account_state``: its ``usage_paused`` arrives at a bare aiokafka consumer of the account-state
  topic (from its end), the baseline;
- ``status_topic``: a record of the trigger account with ``may_send`` false arrives at the same
  consumer, which also reads the status topic the gateways read (the worker writes both in the
  same batch);
- ``client``: an :class:`~runtime.account_status.AccountStatusClient` of this process (started
  on the status topic once the set-up is applied) has applied that record, so its ``may_send``
  answers false: its ``on_applied`` hook checks ``may_send`` of the trigger accounts it names.

Per trigger and path, latency = that moment - the producer's wall-clock time just before it sent
the trigger; it is split at the output record's Kafka timestamp (when the worker produced it)
into "to the worker's send" and "to the consumer". ``client - status topic`` is, per trigger, the
client's time minus the raw consumer's of the same record: what the client itself adds (kafka-python
on a thread, decoding every record of the topic, the table). Reported per phase: p50/p90/p99/max,
the triggers counted and missed, the achieved input rate, and whether the worker kept up: its
consumer group's lag when the producer stopped (and the highest seen every ``--progress`` seconds
before), how long it took to reach zero, and the input rate it applied while the producer ran. A
phase it did not keep up with is flagged: its latencies then measure the backlog, not the path.

The inputs the phase does not write to (payments, accounts, control, unless ``--side-rates`` says
otherwise) are idle. The worker's event-time merge passes an event only while every other input of
its partition number has an event buffered or may be skipped (``streams.intake``
``_caught_up_as_of``: read to its end as of the event's fetch or later), and its Kafka consumer
fetches the idle inputs too; a side rate > 0 keeps them busy, to show what idle inputs cost.
``--fetch-wait-demo`` measures the consumer's part alone (see :func:`fetch_wait_demo`). ``--tree
PATH`` runs the worker of another checkout; ``--profile PREFIX`` samples the worker with py-spy in
each phase. ``--workers N`` runs N workers in one group (their CPU summed, the first profiled);
``--pack-linger SECONDS`` packs the producer's usage per account in ``usage_batch`` messages.

    billing stack up --no-clickhouse
    python -m benchmarks.latency_bench --rates 250 500 750 1000 --seconds 60 --triggers 60 \\
        --json-out latency.json
    python -m benchmarks.latency_bench --rates 1000 5000 --seconds 60 --triggers 100
    python -m benchmarks.latency_bench --rates 300 --side-rates 0 25 0 25 --seconds 45
    python -m benchmarks.latency_bench --rates 5000 --seconds 20 --warmup 2 --triggers 40
    python -m benchmarks.latency_bench --fetch-wait-demo 333 --rates 300 --seconds 25
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import queue
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.pipeline_bench import (
    CURRENT,
    code_from,
    cpu_and_waited,
    print_profile,
    profile_shares,
    start_profile,
)
from billing.events import MAX_BATCH_RECORDS, normalize_input
from devkit.harness import WorkerProcess, private_pipeline
from runtime.account_status import AccountStatusClient
from runtime.codecs import codec_for
from runtime.produce import prepare
from runtime.settings import Settings, load_settings
from tests.integration.pipeline import publish

TRIGGER_PREFIX = "trigger-"
# $1.80 at 0.90 per million: more than the $1.00 free credit of a new self-serve account.
TRIGGER_USAGE = {"product": "deepseek-v3", "quantities": {"output_tokens": 2_000_000}}
BACKGROUND_PRODUCTS = (("llama-v3p1-8b", ("input_tokens", "output_tokens")),
                       ("qwen3-235b", ("input_tokens", "cached_input_tokens", "output_tokens")))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Phase:
    """What the producer publishes in one timed phase."""

    name: str
    rate: float  # background usage events/s
    side_rate: float  # payment_method_added + auto_top_up_configured events/s, for busy inputs
    seconds: float
    warmup: float  # seconds before the first trigger
    background: tuple[str, ...]
    triggers: tuple[str, ...]
    linger_ms: int
    seed: int
    pack_linger: float = 0.0  # > 0: usage packed per account in usage_batch messages, this long


def trigger_event_id(phase_name: str, account: str) -> str:
    return f"{phase_name}-{account}"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> datetime:
    """The current time at the millisecond precision of event times."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Workers:
    """``--workers`` workers of one app id (one consumer group): their lag is the group's, their
    CPU the sum of theirs."""

    def __init__(self, settings: Settings, app_id: str, count: int) -> None:
        self.processes = [WorkerProcess(settings, app_id, Path(tempfile.gettempdir())
                                        / f"latency-bench-{app_id}.{number}.log").start()
                          for number in range(count)]

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.processes if worker.process is not None]

    def lag(self) -> int:
        return self.processes[0].lag()

    def check_running(self) -> None:
        for worker in self.processes:
            worker.check_running()

    def cpu_and_waited(self) -> tuple[float, float]:
        """CPU seconds of all of them, and seconds they waited for a CPU (``/proc``)."""
        return cpu_and_waited(self.pids)

    def stop(self) -> None:
        for worker in self.processes:
            worker.stop()


def setup_events(background: list[str], triggers: list[str]) -> list[dict[str, Any]]:
    """Open every account and put a payment method on file (no suspension, no budget pause);
    one usage per background account moves the watermark past last month's close, so the
    worker's close broadcast (a pass over every account) happens now, not in a timed phase."""
    opened = datetime.now(UTC) - timedelta(hours=1)
    events: list[dict[str, Any]] = []
    for index, account in enumerate(background + triggers):
        contract = ({"contract": "self_serve"} if account.startswith(TRIGGER_PREFIX)
                    else {"contract": "enterprise", "billing_model": "postpaid"})
        at = opened + timedelta(milliseconds=index)
        events.append({"type": "account_opened", "event_id": f"open-{account}",
                       "account_id": account, "timestamp": iso(at),
                       "created_at": iso(at - timedelta(days=1)), **contract})
        events.append({"type": "payment_method_added", "event_id": f"pm-{account}",
                       "account_id": account, "timestamp": iso(at + timedelta(seconds=1)),
                       "payment_method_id": f"pm-{account}"})
        if not account.startswith(TRIGGER_PREFIX):
            product, meters = BACKGROUND_PRODUCTS[0]
            events.append({"type": "usage", "event_id": f"first-{account}", "account_id": account,
                           "timestamp": iso(at + timedelta(seconds=2)), "product": product,
                           "quantities": dict.fromkeys(meters, 100)})
    return [normalize_input(event) for event in events]


def produce(settings: Settings, phase: Phase, results: Any) -> None:
    """The producer process: puts the summary of :func:`publish_phase` on ``results``."""
    results.put(asyncio.run(publish_phase(settings, phase)))


async def publish_phase(settings: Settings, phase: Phase) -> dict[str, Any]:
    """Background usage at ``phase.rate``, triggers evenly spread after the warm-up, side events
    at ``phase.side_rate``, as keyed Avro messages like every producer of the input topics.

    aiokafka and the codec directly rather than ``EventProducer``: this process shares the
    machine with the worker, and its validation and kafka-python's pure-Python record building
    cost twice the CPU per event (the events are valid by construction)."""
    rng = random.Random(phase.seed)
    codec = codec_for(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=phase.linger_ms)
    await producer.start()
    spacing = (phase.seconds - phase.warmup) / max(len(phase.triggers), 1)
    due_triggers = [(phase.warmup + (index + 0.5) * spacing, account)
                    for index, account in enumerate(phase.triggers)]
    trigger_sends: dict[str, float] = {}
    sent = side_sent = 0
    behind_max = 0.0
    started = last_progress = time.monotonic()

    # Packing (``--pack-linger``), as ``EventProducer(pack_usage=True)`` does: an account's usage
    # records wait in one ``usage_batch`` until the first has waited the linger (or it is full).
    packed: dict[str, tuple[float, list[dict[str, Any]]]] = {}
    messages = 0  # usage messages sent: the lag counts messages, a batch is many events

    async def send_usage(event: dict[str, Any]) -> None:
        nonlocal messages
        account = event["account_id"]
        if not phase.pack_linger:
            messages += 1
            await producer.send(settings.topics.usage, key=account.encode(),
                                value=codec.encode("usage", event | {"requests": 1}))
            return
        _, records = packed.setdefault(account, (time.monotonic(), []))
        records.append({name: value for name, value in event.items()
                        if name not in ("type", "account_id")} | {"requests": 1})
        if len(records) >= MAX_BATCH_RECORDS:
            await send_packed(account)

    async def send_packed(account: str) -> None:
        nonlocal messages
        messages += 1
        _, records = packed.pop(account)
        await producer.send(settings.topics.usage, key=account.encode(), value=codec.encode(
            "usage", {"type": "usage_batch", "account_id": account, "records": records}))

    async def send_packed_since(moment: float) -> None:
        for account in [account for account, (first, _) in packed.items() if first <= moment]:
            await send_packed(account)

    try:
        while (elapsed := time.monotonic() - started) < phase.seconds:
            now = now_ms()
            due = int(elapsed * phase.rate)
            behind_max = max(behind_max, (due - sent) / phase.rate)
            for _ in range(due - sent):
                product, meters = rng.choice(BACKGROUND_PRODUCTS)
                await send_usage({"type": "usage", "event_id": f"{phase.name}-u{sent}",
                                  "account_id": rng.choice(phase.background), "timestamp": now,
                                  "product": product, "quantities": {
                                      meter: rng.randrange(10, 2_000) for meter in meters}})
                sent += 1
            while side_sent < int(elapsed * phase.side_rate):
                account = rng.choice(phase.background)
                side = ({"type": "payment_method_added", "payment_method_id": f"pm-{account}"}
                        if side_sent % 2 == 0 else
                        {"type": "auto_top_up_configured", "enabled": False,
                         "minimum_balance": "0", "top_up_amount": "10"})
                message = prepare(side | {"event_id": f"{phase.name}-s{side_sent}",
                                          "account_id": account, "timestamp": now},
                                  settings, codec)
                await producer.send(message.topic, key=message.key, value=message.value)
                side_sent += 1
            while due_triggers and due_triggers[0][0] <= elapsed:
                _, account = due_triggers.pop(0)
                event_id = trigger_event_id(phase.name, account)
                trigger_sends[event_id] = time.time()
                await send_usage({"type": "usage", "event_id": event_id, "account_id": account,
                                  "timestamp": now_ms(), **TRIGGER_USAGE})
            if packed:
                await send_packed_since(time.monotonic() - phase.pack_linger)
            if time.monotonic() - last_progress >= 10:
                last_progress = time.monotonic()
                log(f"  producer: {sent:,} usage sent in {elapsed:.0f} s "
                    f"({sent / elapsed:,.0f}/s), {len(trigger_sends)} triggers")
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - started
        await send_packed_since(time.monotonic())
        await producer.flush()
    finally:
        await producer.stop()
    return {"usage_sent": sent, "usage_messages": messages, "side_sent": side_sent,
            "triggers_sent": len(trigger_sends),
            "seconds": elapsed, "achieved_rate": sent / elapsed,
            "behind_schedule_max_s": behind_max, "trigger_sends": trigger_sends}


class PauseWatcher:
    """Consumes the account-state and account-status topics from their end; notes when each
    trigger's pause arrives on the first, and its record with ``may_send`` false on the second.

    ``causes``: trigger account -> the event id of its trigger (a status record names no
    cause)."""

    def __init__(self, settings: Settings, causes: dict[str, str]) -> None:
        self.settings, self.causes = settings, causes
        self.codec = codec_for(settings)
        self.received: dict[str, tuple[float, float]] = {}  # cause id -> (received, created)
        self.status_received: dict[str, tuple[float, float]] = {}  # the same, status topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                         enable_auto_commit=False)

    async def start(self) -> None:
        await self.consumer.start()
        topics = self.settings.topics
        # private_pipeline created them with the configured partition count
        partitions = [TopicPartition(topic, partition)
                      for topic in (topics.account_state, topics.account_status)
                      for partition in range(self.settings.partitions)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the positions now, before anything is sent
            await self.consumer.position(partition)

    async def run(self) -> None:
        prefix = TRIGGER_PREFIX.encode()
        status_topic = self.settings.topics.account_status
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            received = time.time()
            for tp, records in batches.items():
                for record in records:
                    if record.key is None or not record.key.startswith(prefix):
                        continue
                    times = (received, record.timestamp / 1000)
                    if tp.topic == status_topic:
                        if not self.codec.decode("account_status", record.value)["may_send"]:
                            self.status_received.setdefault(
                                self.causes[record.key.decode()], times)
                        continue
                    event = self.codec.decode("account_state", record.value)
                    if event["type"] == "usage_paused":
                        self.received.setdefault(event["cause_event_id"], times)

    async def stop(self) -> None:
        await self.consumer.stop()


class ClientWatcher:
    """A gateway's :class:`AccountStatusClient` in this process; its ``on_applied`` hook notes
    when ``may_send`` of a trigger account turns false (the client's thread calls it once the
    record is applied)."""

    def __init__(self, settings: Settings, causes: dict[str, str]) -> None:
        self.causes = causes
        self.received: dict[str, float] = {}  # cause id -> when may_send answered false
        self.client = AccountStatusClient(settings, on_applied=self.applied)

    def applied(self, accounts: list[str]) -> None:
        now = time.time()
        for account in accounts:
            cause = self.causes.get(account)
            if cause is not None and cause not in self.received \
                    and not self.client.may_send(account).allowed:
                self.received[cause] = now

    def start(self, timeout: float) -> None:
        self.client.start()
        if not self.client.wait_ready(timeout):
            raise TimeoutError(f"the status client was not ready in {timeout:.0f} s "
                               f"({self.client.progress})")

    def with_legs(self, status: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        """(received, created) per cause: created is the Kafka timestamp of the status record
        the raw consumer saw (the same record)."""
        return {cause: (received, status[cause][1]) for cause, received in self.received.items()
                if cause in status}


def distribution(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``values`` (inclusive quantiles), in milliseconds."""
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 \
        else [values[0]] * 99
    return {"p50": cuts[49] * 1000, "p90": cuts[89] * 1000, "p99": cuts[98] * 1000,
            "max": max(values) * 1000}


def latencies(sends: dict[str, float], received: dict[str, tuple[float, float]]
              ) -> dict[str, Any]:
    """Per-trigger latency of one path in send order, its two legs, and the first half against
    the second (a worker falling behind shows as a second half slower than the first)."""
    order = sorted(sends, key=sends.__getitem__)
    seen = [event_id for event_id in order if event_id in received]
    total = [received[event_id][0] - sends[event_id] for event_id in seen]
    half = len(total) // 2
    return {
        "triggers_sent": len(sends), "triggers_received": len(seen),
        "series": [(round(sends[event_id] - sends[order[0]], 3), round(latency * 1000, 1))
                   for event_id, latency in zip(seen, total, strict=True)],
        "latency_ms": distribution(total),
        "to_worker_send_ms": distribution([received[event_id][1] - sends[event_id]
                                           for event_id in seen]),
        "to_consumer_ms": distribution([received[event_id][0] - received[event_id][1]
                                        for event_id in seen]),
        "p50_first_half_ms": distribution(total[:half]).get("p50"),
        "p50_second_half_ms": distribution(total[half:]).get("p50"),
    }


async def fetch_wait_demo(settings: Settings, rate: float, capacity: float, seconds: float,
                          waits: tuple[int, ...] = (1500, 100)) -> dict[str, Any]:
    """The input side alone, without the worker: bare aiokafka consumers of the four input
    topics (only usage is written to, at ``rate``) that take at most ``capacity`` records/s, one
    per ``fetch_max_wait_ms`` in ``waits`` (Faust's driver hard-codes 1500), all reading the same
    records at once; each record's delay from its send to its delivery.

    aiokafka fetches nothing from a broker while a partition's records, fetched under 100 ms ago,
    wait to be consumed, then fetches every other partition: a consumer near its capacity sends
    fetches that cover only the idle topics, which the broker holds for ``fetch_max_wait_ms``."""
    topic_partitions = [TopicPartition(topic, partition) for topic in settings.topics.inputs
                        for partition in range(settings.partitions)]
    delays: dict[int, list[float]] = {wait: [] for wait in waits}
    batch = 20

    async def consume(wait: int) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                    fetch_max_wait_ms=wait, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(topic_partitions)
            await consumer.seek_to_end(*topic_partitions)
            for partition in topic_partitions:
                await consumer.position(partition)
            while True:
                records = await consumer.getmany(timeout_ms=100, max_records=batch)
                received = time.time()
                delays[wait].extend(received - float(record.value)
                                    for records_of_tp in records.values()
                                    for record in records_of_tp)
                await asyncio.sleep(batch / capacity)  # busy with what it got
        finally:
            await consumer.stop()

    consumers = [asyncio.ensure_future(consume(wait)) for wait in waits]
    await asyncio.sleep(3)  # positions resolved
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        started, sent = time.monotonic(), 0
        while (elapsed := time.monotonic() - started) < seconds:
            for _ in range(int(elapsed * rate) - sent):
                await producer.send(settings.topics.usage, key=f"account-{sent % 100}".encode(),
                                    value=repr(time.time()).encode())
                sent += 1
            await asyncio.sleep(0.002)
    finally:
        await producer.stop()
    await asyncio.sleep(3)  # the last records delivered
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return {"rate": rate, "capacity": capacity, "seconds": seconds, "records": sent,
            "delay_ms": {str(wait): distribution(values) for wait, values in delays.items()}}


async def producer_result(producer: Any, results: Any, worker: Workers,
                          watcher: PauseWatcher, phase: Phase, progress: float
                          ) -> tuple[dict[str, Any], int]:
    """Wait for the producer's summary, logging the worker's lag every ``progress`` seconds;
    return it with the highest lag seen; raise if the producer or the worker ended without one."""
    next_report = time.monotonic() + progress
    lag_max = 0
    while True:
        try:  # without blocking the loop while producing: the watcher notes receive times
            return (results.get_nowait() if producer.is_alive() else results.get(timeout=5),
                    lag_max)
        except queue.Empty:
            if not producer.is_alive():
                raise RuntimeError(f"the producer of {phase.name} ended without a result (exit "
                                   f"code {producer.exitcode}); see its traceback above") from None
        worker.check_running()
        if time.monotonic() >= next_report:
            next_report += progress
            lag = await asyncio.to_thread(worker.lag)
            lag_max = max(lag_max, lag)
            log(f"  {phase.name}: worker lag {lag:,}, pauses received {len(watcher.received)}")
        await asyncio.sleep(0.2)


async def run_phase(settings: Settings, worker: Workers, watcher: PauseWatcher,
                    client: ClientWatcher, phase: Phase, args: argparse.Namespace
                    ) -> dict[str, Any]:
    """Publish one phase, watch the worker's lag on the way, wait for it to catch up."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    producer = context.Process(target=produce, args=(settings, phase, results), daemon=True)
    producer.start()
    (cpu_at_start, waited_at_start), started = worker.cpu_and_waited(), time.monotonic()
    profiler = None
    if args.profile is not None:  # the first worker
        profile_path = args.profile.with_name(f"{args.profile.name}.{phase.name}.raw")
        profiler = start_profile(worker.pids[0], profile_path, phase.seconds)
    sent, lag_max = await producer_result(producer, results, worker, watcher, phase,
                                          args.progress)
    producer.join(30)
    lag_at_end = await asyncio.to_thread(worker.lag)
    lag_max = max(lag_max, lag_at_end)
    stopped = time.monotonic()
    cpu_now, waited_now = worker.cpu_and_waited()
    cpu_while_producing = cpu_now - cpu_at_start
    waited_while_producing = waited_now - waited_at_start
    expected = set(sent["trigger_sends"])
    while (lag := await asyncio.to_thread(worker.lag)) or not expected <= (
            watcher.received.keys() & watcher.status_received.keys() & client.received.keys()):
        worker.check_running()
        if time.monotonic() - stopped > args.drain_timeout:
            log(f"  {phase.name}: gave up waiting after {args.drain_timeout:.0f} s, lag {lag:,}")
            break
        await asyncio.sleep(0.5)
    drain = time.monotonic() - stopped
    cpu = worker.cpu_and_waited()[0] - cpu_at_start
    inputs = sent["usage_sent"] + sent["side_sent"] + sent["triggers_sent"]
    # The lag counts messages: in events, a packed message counts its records (on average).
    per_message = (sent["usage_sent"] + sent["triggers_sent"]) / max(sent["usage_messages"], 1)
    lag_at_end, lag_max = round(lag_at_end * per_message), round(lag_max * per_message)
    sends = sent["trigger_sends"]
    figures: dict[str, Any] = {
        "phase": phase.name, "rate": phase.rate, "side_rate": phase.side_rate,
        "seconds": sent["seconds"], "usage_sent": sent["usage_sent"],
        "usage_per_message": per_message,
        "side_sent": sent["side_sent"], "achieved_rate": sent["achieved_rate"],
        "producer_behind_max_s": sent["behind_schedule_max_s"],
        "lag_at_end": lag_at_end, "lag_at_end_s": lag_at_end / phase.rate,
        "lag_max": lag_max, "lag_max_s": lag_max / phase.rate,  # sampled every --progress s
        # committed offsets: up to a commit interval (2.8 s) of input short
        "worker_applied_rate": (inputs - lag_at_end) / sent["seconds"],
        "drain_s": drain, "lag_after_drain": lag,
        # CPU the worker got while the producer ran, as a share of one core, and its CPU per
        # input event up to the end of the drain: the machine is shared, so a worker that falls
        # behind may be short of CPU rather than slow
        "worker_cpu_share": cpu_while_producing / (stopped - started),
        "worker_cpu_wait_share": waited_while_producing / (stopped - started),
        "worker_events_per_cpu_s": inputs / max(cpu, 1e-9),
        "paths": {"account_state": latencies(sends, watcher.received),
                  "status_topic": latencies(sends, watcher.status_received),
                  "client": latencies(sends, client.with_legs(watcher.status_received))},
        "client_minus_status_topic_ms": distribution(
            [client.received[cause] - watcher.status_received[cause][0]
             for cause in sends if cause in client.received and cause in watcher.status_received]),
    }
    # Faust commits offsets every 2.8 s, so a worker that keeps up still shows a few seconds'
    # lag; one that does not shows the backlog it built (also one it worked off before the end).
    figures["kept_up"] = figures["lag_max_s"] <= args.kept_up_lag_s and lag == 0
    if profiler is not None:
        profiler.wait(60)
        figures["profile"] = profile_shares(profile_path)
    return figures


PATHS = {"account_state": "usage_paused on account-state (baseline)",
         "status_topic": "may_send false on the status topic (raw consumer)",
         "client": "may_send false in AccountStatusClient"}


def spread(values: dict[str, float]) -> str:
    return " ".join(f"{key} {value:,.0f}" for key, value in values.items()) or "n/a"


def print_phase(figures: dict[str, Any]) -> None:
    print(f"{figures['phase']}: {figures['achieved_rate']:,.0f} usage/s for "
          f"{figures['seconds']:.0f} s (+{figures['side_sent']:,} side events), "
          f"{figures['usage_per_message']:.1f} usage events per message")
    for name, path in figures["paths"].items():
        halves = [path[f"p50_{half}_half_ms"] or 0 for half in ("first", "second")]
        print(f"  {PATHS[name]}: {path['triggers_received']}/{path['triggers_sent']} triggers\n"
              f"    latency ms: {spread(path['latency_ms'])}\n"
              f"    to the worker's send: {spread(path['to_worker_send_ms'])}; to the consumer: "
              f"{spread(path['to_consumer_ms'])}; p50 first/second half "
              f"{halves[0]:,.0f}/{halves[1]:,.0f}")
    print(f"  client - status topic, per trigger, ms: "
          f"{spread(figures['client_minus_status_topic_ms'])}")
    verdict = ("kept up" if figures["kept_up"] else
               "FELL BEHIND: the latencies above include the backlog")
    print(f"  lag at end {figures['lag_at_end']:,} ({figures['lag_at_end_s']:.1f} s of input; "
          f"highest {figures['lag_max']:,}, {figures['lag_max_s']:.1f} s), drained in "
          f"{figures['drain_s']:.1f} s; worker applied "
          f"~{figures['worker_applied_rate']:,.0f} input events/s while producing; {verdict}\n"
          f"  worker: {figures['worker_cpu_share']:.0%} of a core while producing (waited for "
          f"one {figures['worker_cpu_wait_share']:.0%}), "
          f"{figures['worker_events_per_cpu_s']:,.0f} input events per CPU second", flush=True)
    if "profile" in figures:
        print_profile(figures["profile"])


async def run_phases(settings: Settings, worker: Workers,
                     phases: list[Phase], args: argparse.Namespace) -> list[dict[str, Any]]:
    causes = {account: trigger_event_id(phase.name, account)
              for phase in phases for account in phase.triggers}
    client = ClientWatcher(settings, causes)
    await asyncio.to_thread(client.start, 120)
    watcher = PauseWatcher(settings, causes)
    await watcher.start()
    watching = asyncio.ensure_future(watcher.run())
    results = []
    try:
        for phase in phases:
            log(f"phase {phase.name}: {phase.rate:,.0f} usage/s, {phase.side_rate:,.0f} side "
                f"events/s, {len(phase.triggers)} triggers, {phase.seconds:.0f} s")
            results.append(await run_phase(settings, worker, watcher, client, phase, args))
            print_phase(results[-1])
    finally:
        watching.cancel()
        await watcher.stop()
        client.client.close()
    return results


def run_fetch_wait_demo(args: argparse.Namespace) -> int:
    results = []
    for rate in args.rates:
        settings, _ = private_pipeline(load_settings(), f"fetchwait-{uuid.uuid4().hex[:8]}")
        results.append(asyncio.run(fetch_wait_demo(settings, rate, args.fetch_wait_demo,
                                                   args.seconds)))
        for wait, delay in results[-1]["delay_ms"].items():
            print(f"{rate:,.0f} records/s, consumers taking {args.fetch_wait_demo:,.0f}/s, "
                  f"fetch_max_wait_ms={wait}: delay ms " + " ".join(
                      f"{key} {value:,.0f}" for key, value in delay.items()), flush=True)
    if args.json_out:
        args.json_out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5000.0],
                        help="background usage events/s, one phase each (ascending is best)")
    parser.add_argument("--side-rates", type=float, nargs="+", default=[0.0],
                        help="events/s on the payments and accounts topics; 0 leaves them idle")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the 1st trigger")
    parser.add_argument("--triggers", type=int, default=100, help="triggers per phase")
    parser.add_argument("--accounts", type=int, default=1000, help="background accounts")
    parser.add_argument("--linger-ms", type=int, default=5, help="the producer's linger")
    parser.add_argument("--workers", type=int, default=1,
                        help="workers in the group (their CPU summed: 'of a core' is then cores)")
    parser.add_argument("--pack-linger", type=float, default=0.0, metavar="SECONDS",
                        help="pack each account's usage in usage_batch messages sent this long "
                             "after their first record (0: one message per event)")
    parser.add_argument("--progress", type=float, default=10.0, help="seconds between lag checks")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait after a phase for the worker to catch up")
    parser.add_argument("--kept-up-lag-s", type=float, default=5.0,
                        help="lag (in seconds of input) during and at the end of a phase that "
                             "still counts as keeping up (offsets are committed every 2.8 s)")
    parser.add_argument("--profile", type=Path, metavar="PREFIX",
                        help="py-spy raw stacks of the worker in each phase: PREFIX.<phase>.raw")
    parser.add_argument("--tree", default=CURRENT, metavar="PATH",
                        help="run the worker of this checkout (default: this one, as installed)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    parser.add_argument("--fetch-wait-demo", type=float, metavar="CAPACITY",
                        help="instead: the input side alone, consumers taking at most CAPACITY "
                             "records/s, with Faust's and a short fetch_max_wait_ms (see "
                             "fetch_wait_demo), at each of --rates for --seconds")
    args = parser.parse_args(argv)
    if args.fetch_wait_demo:
        return run_fetch_wait_demo(args)
    settings, app_id = private_pipeline(load_settings(), f"latency-{uuid.uuid4().hex[:8]}")
    background = [f"bg-{index:05d}" for index in range(args.accounts)]
    phases = [Phase(name=f"p{number}-r{rate:.0f}-s{side:.0f}", rate=rate, side_rate=side,
                    seconds=args.seconds, warmup=args.warmup, background=tuple(background),
                    triggers=tuple(f"{TRIGGER_PREFIX}{number}-{index:04d}"
                                   for index in range(args.triggers)),
                    linger_ms=args.linger_ms, seed=number, pack_linger=args.pack_linger)
              for number, (side, rate) in enumerate(
                  (side, rate) for side in args.side_rates for rate in args.rates)]
    events = setup_events(background, [account for phase in phases for account in phase.triggers])
    log(f"pipeline {app_id}: publishing {len(events):,} set-up events")
    publish(settings, events)
    with code_from(args.tree):
        worker = Workers(settings, app_id, args.workers)
    try:
        started = time.monotonic()
        worker.processes[0].wait_drained(600)  # the group's lag
        log(f"{args.workers} worker(s) started and applied the set-up in "
            f"{time.monotonic() - started:.1f} s (log {worker.processes[0].log_path})")
        results = asyncio.run(run_phases(settings, worker, phases, args))
    finally:
        worker.stop()
    if args.json_out:
        described = [asdict(phase) | {"background": len(phase.background),
                                      "triggers": len(phase.triggers)} for phase in phases]
        args.json_out.write_bytes(orjson.dumps(
            {"app_id": app_id, "tree": args.tree, "phases": described, "results": results},
            option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
