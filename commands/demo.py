"""``billing demo``: the whole pipeline on a simulated population, end to end, in a few minutes.

What one run does, on the configured Kafka (``make demo`` starts the local one first):

1. makes sure Kafka is up (``start_stack`` without the ClickHouse server: the demo's ClickHouse is
   embedded chdb, ``<data dir>/demo/<run id>/chdb``);
2. creates the run's own topics, ``demo-<run id>.<topic>``, and uses the app id
   ``ledger-demo-<run id>`` (consumer group and changelog topics), so every run starts from empty
   topics and an empty table whatever ran before; the run id defaults to the UTC start time;
3. generates a seeded population and a month of its traffic (``devkit.workload.generate``) and
   publishes it with :class:`~runtime.produce.EventProducer`, which refuses invalid events at the
   source (a small share of bad input is generated on purpose; what the producer cannot judge,
   such as an unknown product, reaches the dead-letter topic);
4. runs the ledger worker (``billing worker --store memory://`` as a child process), the ClickHouse
   sink (a thread) and a simulated payment processor (a thread, :class:`PaymentProcessor`);
5. shows progress until the pipeline is quiet: every consumer group (worker, processor, sink) has
   committed everything, twice in a row a commit interval apart, with nothing new produced;
6. reconciles ClickHouse against the worker's own final snapshots (``sinks.reconcile``), keeps
   those snapshots in the run directory (``snapshots.json``, the format of ``billing snapshots``)
   and prints the ``billing reconcile`` command that checks them again later, prints a summary
   and writes an HTML report (:mod:`dashboard.report`); exits 1 on any difference.

The replay oracle cannot be the reference here: the processor answers top-ups as the worker
requests them, so when an answer lands (and what the ledger does meanwhile) depends on timing. The
check is instead that ClickHouse holds exactly what the ledger decided, in this run.

The generator plays the payment processor itself when it writes a file (it answers the top-ups it
predicts, with the ids the ledger will use). Here a live processor answers, so the generator's
answers are left out of what is published: each top-up is answered once, by the processor.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shlex
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from billing.config import BillingConfig, ConfigError
from billing.events import ZERO, InvalidEvent
from billing.pricebook import PriceBook
from billing.snapshots import dump_snapshots
from commands.deadletter import read_dead_letters
from dashboard.report import RunFacts, RunReport, summarize, summary_text, write_html
from devkit.harness import WorkerExited, WorkerProcess, private_pipeline
from devkit.stack.cli import LOG_FORMAT
from devkit.stack.lifecycle import start_stack
from devkit.workload import DEFAULT_START, PAYMENT_FAILURES, generate
from runtime.codecs import codec_for
from runtime.kafka_security import kafka_python_security
from runtime.logfmt import log_event
from runtime.observe import group_lag, table_snapshots
from runtime.produce import DeliveryError, EventProducer
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import Settings, SettingsError, load_settings
from runtime.topics import StackError
from schemas.codec import CodecError
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, open_writer
from sinks.reconcile import Report as Reconciliation
from sinks.reconcile import reconcile
from sinks.sink import build_sink

log = logging.getLogger("commands.demo")

# The generator's own answers to the top-ups it predicts (replaced by the live processor's).
ANSWER_TYPES = ("credits_purchased", "payment_failed")
# Seconds between checks that the pipeline is quiet: longer than Faust's commit interval (2.8 s),
# so two quiet checks in a row see a commit made after the first one.
QUIET_CHECK_SECONDS = 3.0
RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")  # legal in a Kafka topic name and a file name


class DemoError(RuntimeError):
    """The demo could not run or finish; the message says what to do."""


@dataclass(frozen=True)
class DemoOptions:
    """The population, its traffic and the processor's behaviour (defaults: the README's demo)."""

    accounts: int = 2_000
    events: int = 60_000
    seed: int = 7
    failure_percent: int = 10  # of top-ups the processor declines
    bad_fraction: float = 0.001  # of generated events that are invalid on purpose
    run_id: str | None = None  # default: the UTC start time
    timeout: float = 900.0  # seconds for the whole run, until the pipeline is quiet
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    """What a run produced; ``report.ok`` is False when ClickHouse disagrees with the ledger."""

    report: RunReport
    report_path: Path
    reconciliation: Reconciliation
    snapshots_path: Path | None = None  # the ledger's final snapshots (`billing snapshots` form)


# -- the simulated payment processor ------------------------------------------------------------


@dataclass
class ProcessorStats:
    """What the processor has done so far (read by the progress display from another thread)."""

    outputs_seen: int = 0
    paid: int = 0
    paid_amount: Decimal = ZERO
    failed: int = 0

    @property
    def answered(self) -> int:
        return self.paid + self.failed


class PaymentProcessor:
    """Answers every ``top_up_requested`` on the account-state topic, as a card processor would.

    Each answer is a function of the request alone: whether it fails, its delay and its ids come
    from a random generator seeded with the run's seed and the request id, and its event time is
    the request's plus that delay. So an answer sent twice (after a restart of this consumer) is
    the same event with the same ``event_id``, which the ledger drops as a duplicate.

    It runs in a consumer group of its own and commits only after its answers are acknowledged
    by Kafka, so "group lag 0" means every request seen so far has been answered.
    """

    def __init__(self, settings: Settings, group_id: str, seed: int,
                 failure_percent: int) -> None:
        self.settings, self.group_id = settings, group_id
        self.seed, self.failure_percent = seed, failure_percent
        self.stats = ProcessorStats()
        self._stop = threading.Event()

    def answer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The ``credits_purchased`` or ``payment_failed`` input event answering ``request``."""
        request_id = request["top_up_request_id"]
        rand = random.Random(f"payment-processor:{self.seed}:{request_id}")
        failed = rand.random() * 100 < self.failure_percent
        header = {"event_id": f"processor-{request_id}", "account_id": request["account_id"],
                  "timestamp": request["timestamp"] + timedelta(seconds=rand.randint(2, 90)),
                  "payment_id": f"pay-{request_id}", "top_up_request_id": request_id}
        if failed:
            return {"type": "payment_failed", **header, "reason": rand.choice(PAYMENT_FAILURES)}
        return {"type": "credits_purchased", **header, "amount": request["amount"],
                "receipt_url": f"https://pay.example.com/receipts/pay-{request_id}"}

    def run(self) -> None:
        """Consume, answer and commit until :meth:`stop`."""
        consumer = KafkaConsumer(self.settings.topics.account_state,
                                 bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                                 group_id=self.group_id, enable_auto_commit=False,
                                 auto_offset_reset="earliest",
                                 **kafka_python_security(self.settings))
        answered: set[str] = set()
        codec = codec_for(self.settings)
        try:
            with EventProducer(self.settings) as producer:
                while not self._stop.is_set():
                    polled = consumer.poll(timeout_ms=500)
                    for records in polled.values():
                        for record in records:
                            self._handle(codec.decode("account_state", record.value), answered,
                                         producer)
                    if polled:
                        producer.flush()  # answers acknowledged before the requests are marked
                        consumer.commit()
        finally:
            consumer.close(autocommit=False)

    def _handle(self, output: Mapping[str, Any], answered: set[str],
                producer: EventProducer) -> None:
        self.stats.outputs_seen += 1
        if output["type"] != "top_up_requested" or output["top_up_request_id"] in answered:
            return
        answered.add(output["top_up_request_id"])
        answer = self.answer(output)
        producer.send(answer)
        if answer["type"] == "credits_purchased":
            self.stats.paid += 1
            self.stats.paid_amount += answer["amount"]
        else:
            self.stats.failed += 1
        log_event(log, "demo.top_up_answered", logging.DEBUG,
                  request=output["top_up_request_id"], answer=answer["type"])

    def stop(self) -> None:
        self._stop.set()


class _Background:
    """A daemon thread whose exception is kept, so the main loop can raise it (a dead thread
    would otherwise look like a pipeline that never becomes quiet)."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name, self.error = name, None
        self.thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception as error:  # reported by check() in the main thread
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise DemoError(f"the {self.name} failed: {type(self.error).__name__}: "
                            f"{self.error}") from self.error
        if not self.thread.is_alive():
            raise DemoError(f"the {self.name} stopped unexpectedly")


# -- the run -------------------------------------------------------------------------------------


def new_run_id() -> str:
    """The UTC time to the second: sorts by age and names the run's topics and directory."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def workload(options: DemoOptions, pricebook: PriceBook, config: BillingConfig
             ) -> tuple[list[dict[str, Any]], int]:
    """The generated events without the generator's top-up answers, and how many were left out."""
    events, left_out = [], 0
    for event in generate(options.accounts, options.events, options.seed, DEFAULT_START,
                          bad_fraction=options.bad_fraction, pricebook=pricebook, config=config):
        if event["type"] in ANSWER_TYPES and event.get("top_up_request_id"):
            left_out += 1
        else:
            events.append(event)
    return events, left_out


def publish(settings: Settings, events: list[dict[str, Any]], progress: bool) -> tuple[int, int]:
    """Send ``events`` through the validating producer; returns (published, refused)."""
    refused = 0
    with EventProducer(settings) as producer:
        for event in tqdm(events, desc="publish", unit="ev", disable=not progress):
            try:
                producer.send(event)
            except InvalidEvent as error:
                refused += 1
                log_event(log, "demo.refused", logging.DEBUG, event_id=event.get("event_id"),
                          reason=error)
    return len(events) - refused, refused


def dead_letters_by_field(settings: Settings) -> Counter[str]:
    """The dead-letter topic's messages, counted by the field at fault."""
    return Counter((entry.letter.get("field") or "(none)") if entry.error is None else "unreadable"
                   for entry in read_dead_letters(settings, codec_for(settings)))


class Pipeline:
    """The run's three consumers: the ledger worker (a child process), the payment processor and
    the ClickHouse sink (threads), each in a consumer group of its own."""

    def __init__(self, settings: Settings, app_id: str, writer: ClickHouseWriter,
                 options: DemoOptions, worker_log: Path, published: int) -> None:
        self.settings, self.published = settings, published
        self.sink_group = f"{app_id}-sink"
        self.sink = build_sink(settings, writer, group_id=self.sink_group)
        self.processor = PaymentProcessor(settings, f"{app_id}-payment-processor", options.seed,
                                          options.failure_percent)
        self.worker = WorkerProcess(settings, app_id, worker_log)
        self._threads: list[_Background] = []

    def start(self) -> None:
        self._threads = [_Background("ClickHouse sink", lambda: self.sink.run(progress_seconds=30)),
                         _Background("payment processor", self.processor.run)]
        self.worker.start()

    def check(self) -> None:
        """Raise if the worker or a thread has died."""
        self.worker.check_running()
        for background in self._threads:
            background.check()

    def lags(self) -> tuple[int, int, int]:
        """Uncommitted messages of the worker, the processor and the sink, in pipeline order."""
        topics = self.settings.topics
        return (self.worker.lag(),
                group_lag(self.settings, self.processor.group_id, (topics.account_state,)),
                group_lag(self.settings, self.sink_group,
                          (topics.account_state, topics.usage_rated, topics.account_status)))

    def counts(self) -> tuple[int, int]:
        """Output events the processor has seen and top-ups it has answered."""
        return self.processor.stats.outputs_seen, self.processor.stats.answered

    def inputs(self) -> int:
        """Input events sent to the worker so far: the workload and the processor's answers."""
        return self.published + self.processor.stats.answered

    def stop(self) -> None:
        """Stop all three (the sink writes its last batch first) and release the sink's group."""
        self.processor.stop()
        self.sink.stop()
        self.worker.stop()
        for background in self._threads:
            background.thread.join(60)
        self.sink.close()


def wait_quiet(pipeline: Pipeline, deadline: float, show: bool) -> None:
    """Show progress until the pipeline is quiet: every lag 0 at two checks in a row, with no
    output seen nor answer sent in between (an answer is new input for the worker)."""
    previous: tuple[int, int] | None = None  # the counts at the last quiet check
    with tqdm(total=pipeline.inputs(), desc="worker", unit="ev", disable=not show) as bar:
        while True:
            pipeline.check()
            lags = _lags(pipeline)
            if lags is not None:
                counts, total = pipeline.counts(), pipeline.inputs()
                bar.total, bar.n = total, max(0, total - lags[0])
                bar.set_postfix_str(f"outputs {counts[0]:,}, top-ups answered {counts[1]:,}, "
                                    f"processor lag {lags[1]:,}, sink lag {lags[2]:,}",
                                    refresh=True)
                if not any(lags) and previous == counts:
                    return
            previous = counts if lags is not None and not any(lags) else None
            if time.monotonic() > deadline:
                raise TimeoutError("the pipeline is not quiet yet: uncommitted messages of "
                                   f"worker/processor/sink {lags or 'unknown'}")
            time.sleep(QUIET_CHECK_SECONDS if previous is not None else 1.0)


def _lags(pipeline: Pipeline) -> tuple[int, int, int] | None:
    """The pipeline's lags, or None while Kafka cannot tell (a group coordinator still loading on
    a fresh broker, or moving): the next check asks again."""
    try:
        return pipeline.lags()
    except KafkaError as error:
        if not error.retriable:
            raise
        log_event(log, "demo.lag_unavailable", logging.WARNING, error=repr(error))
        return None


def run_demo(settings: Settings, options: DemoOptions = DemoOptions()) -> DemoResult:
    """Run the demo on ``settings``' Kafka and return its report (see the module docstring).

    Raises :class:`DemoError` (or the stack's, Kafka's, ClickHouse's errors) if it cannot finish.
    """
    started = time.monotonic()
    run_id = options.run_id or new_run_id()
    if not RUN_ID.fullmatch(run_id):
        raise DemoError(f"run id {run_id!r} must be 1-100 letters, digits, '.', '_' or '-': it "
                        "names Kafka topics and a directory")
    run_dir = settings.data_dir / "demo" / run_id
    if run_dir.exists():
        raise DemoError(f"{run_dir} exists: run id {run_id} was used already; pick another")
    pricebook = load_pricebook(settings.pricebook_path)
    config = load_config(settings.config_path)
    try:
        events, left_out = workload(options, pricebook, config)
    except ValueError as error:  # arguments that cannot make a workload: before touching Kafka
        raise DemoError(str(error)) from None
    run_dir.mkdir(parents=True)
    log_event(log, "demo.start", run_id=run_id, accounts=options.accounts, events=options.events,
              seed=options.seed, directory=run_dir)
    log_event(log, "demo.stack", **start_stack(settings, with_clickhouse=False))
    settings, app_id = private_pipeline(
        replace(settings, clickhouse_url=f"chdb://{run_dir / 'chdb'}"), f"demo-{run_id}")
    log_event(log, "demo.topics", prefix=f"demo-{run_id}.", app_id=app_id)
    published, refused = publish(settings, events, options.progress)
    log_event(log, "demo.published", events=published, refused=refused,
              left_to_processor=left_out)

    writer = open_writer(settings)
    try:
        writer.apply_ddl()
        pipeline = Pipeline(settings, app_id, writer, options, run_dir / "worker.log", published)
        try:
            pipeline.start()
            log_event(log, "demo.running", worker_log=pipeline.worker.log_path)
            wait_quiet(pipeline, started + options.timeout, options.progress)
        except TimeoutError as error:
            raise DemoError(f"{error} after {options.timeout:.0f} s (--timeout); the end of "
                            f"{pipeline.worker.log_path}:\n{pipeline.worker.log_tail()}") from None
        finally:
            pipeline.stop()
        stats = pipeline.processor.stats
        log_event(log, "demo.quiet", seconds=round(time.monotonic() - started),
                  sink_rows=pipeline.sink.stats.rows_written, top_ups_answered=stats.answered)

        snapshots = table_snapshots(settings, app_id)
        snapshots_path = run_dir / "snapshots.json"
        snapshots_path.write_bytes(dump_snapshots(snapshots))
        reconciliation = reconcile(writer, snapshots)
        facts = RunFacts(
            run_id=run_id, accounts=options.accounts, events=options.events, seed=options.seed,
            published=published, refused=refused, left_to_processor=left_out,
            top_ups_paid=stats.paid, top_ups_paid_amount=stats.paid_amount,
            top_ups_failed=stats.failed, seconds=round(time.monotonic() - started),
            clickhouse=settings.clickhouse_url, free_credit=config.free_credit)
        report = summarize(writer, snapshots, facts, dead_letters_by_field(settings),
                           reconciliation)
    finally:
        writer.close()
    report_path = write_html(report, run_dir / "report.html")
    log_event(log, "demo.done", run_id=run_id, ok=report.ok,
              differences=len(reconciliation.differences), report=report_path,
              seconds=round(time.monotonic() - started))
    return DemoResult(report, report_path, reconciliation, snapshots_path)


def billing_command() -> str:
    """How to run ``billing`` again: its path when it is not the one on the PATH."""
    program = Path(sys.argv[0])
    if program.name == "billing" and shutil.which("billing") != str(program.resolve()):
        return str(program) if program.is_absolute() else os.path.relpath(program)
    return "billing"


def reconcile_command_line(result: DemoResult) -> str:
    """The command that reconciles the run's ClickHouse with the snapshots it kept (the run's
    topics are private, so its snapshots file rather than the live status topic)."""
    chdb = shlex.quote(f"chdb://{result.report_path.parent / 'chdb'}")
    return (f"BILLING_CLICKHOUSE_URL={chdb} {shlex.quote(billing_command())} reconcile "
            f"--snapshots {shlex.quote(str(result.snapshots_path))}")


@click.command("demo")
@click.option("--accounts", type=click.IntRange(min=1), default=DemoOptions.accounts,
              show_default=True, help="Simulated accounts.")
@click.option("--events", type=click.IntRange(min=1), default=DemoOptions.events,
              show_default=True, help="Generated input events (a month of traffic).")
@click.option("--seed", type=int, default=DemoOptions.seed, show_default=True)
@click.option("--failure-percent", type=click.IntRange(0, 100),
              default=DemoOptions.failure_percent, show_default=True,
              help="Share of top-ups the simulated payment processor declines.")
@click.option("--bad-fraction", type=click.FloatRange(0, 1, max_open=True),
              default=DemoOptions.bad_fraction, show_default=True,
              help="Share of invalid events (refused by the producer or dead-lettered).")
@click.option("--run-id", default=None,
              help="Names the topics (demo-RUN_ID.*) and BILLING_DATA_DIR/demo/RUN_ID; "
                   "default: the UTC time.")
@click.option("--timeout", type=click.FloatRange(min=1), default=DemoOptions.timeout,
              show_default=True, help="Seconds allowed for the whole run.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def demo_command(accounts: int, events: int, seed: int, failure_percent: int,
                 bad_fraction: float, run_id: str | None, timeout: float,
                 progress: bool) -> None:
    """Run the pipeline end to end on a simulated population; print a reconciled summary.

    Exits 1 if ClickHouse and the ledger disagree by as much as a micro-dollar.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # it narrates every connection
    # The progress bar shows the sink's lag; keep its warnings (retries, undecodable) only.
    logging.getLogger("sinks.sink").setLevel(logging.WARNING)
    options = DemoOptions(accounts, events, seed, failure_percent, bad_fraction, run_id,
                          timeout, progress)
    with _clean_errors(), logging_redirect_tqdm():
        result = run_demo(load_settings(), options)
    click.echo(summary_text(result.report))
    for difference in result.reconciliation.differences[:20]:
        click.echo(f"  difference: {difference}")
    click.echo(f"\nReport: {result.report_path}")
    # The command as it was run (.venv/bin/billing after `make demo`), so the line works as
    # printed even when billing is not on the PATH.
    click.echo("Dashboard: BILLING_CLICKHOUSE_URL="
               f"chdb://{result.report_path.parent / 'chdb'} {billing_command()} dashboard")
    if result.snapshots_path is not None:
        click.echo(f"Reconcile: {reconcile_command_line(result)}")
    if not result.report.ok:
        raise SystemExit(1)


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Turn the errors a demo run can meet into a one-line ``Error: ...`` with exit code 1."""
    try:
        yield
    except (DemoError, StackError, SettingsError, ConfigError, WorkerExited, ClickHouseError,
            CodecError, DeliveryError, KafkaError) as error:
        raise click.ClickException(f"{type(error).__name__}: {error}") from None
