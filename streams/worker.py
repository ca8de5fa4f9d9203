"""The Faust worker: input topics -> event-time merge -> ledger -> account-state.

One agent consumes the four co-partitioned input topics. Each message is decoded and validated
(bad input goes to ``billing.dead-letter`` with a reason, and is acknowledged), buffered in the
:class:`~billing.merge.EventTimeMerger`, and applied to the account's state in event-time order by
the pure ledger. The state lives in the ``accounts`` table, whose changelog topic (compacted) is
what a restarted worker recovers from. Outputs go to ``billing.account-state``, keyed by account;
rated usage to ``billing.usage-rated``, one message per batch on its accounts' partition: both
stay co-partitioned with the inputs.

Month close. Each partition tracks its watermark (largest usage time) in the ``partition_clock``
table. When it passes a month's close time the worker broadcasts a ``close_period`` with the
deterministic id ``watermark:YYYY-MM`` and no account to every partition of the control topic, so
accounts that fell silent close too, on every worker, at the same point of event time.

Every input offset is taken in once, in order, whatever Faust skips or repeats
(:mod:`streams.quirks.input_sequence`), and an offset is committed only once its event's
effects are durable (:mod:`streams.quirks.ack_offsets`): an event still waiting in the merge
buffer is redelivered after a crash, never skipped, and an applied batch goes through
:class:`~streams.commit.CommitQueue`, which delivers its outputs, then its changelog records, then
records its offsets as applied, without holding up the next batch.

The worker's jobs, one module each; this one builds the Faust app and its tables, wires the jobs
together, and handles rebalances and shutdown:

- input, :mod:`streams.intake`: the agent's stream, the input sequence check, decoding and
  validating messages (``usage_batch`` records included), dead-lettering invalid input, the merge
  buffer, reading stalled inputs, and exiting when stuck (:data:`~streams.intake.EXIT_STUCK`);
- apply, :mod:`streams.apply`: what the merge releases, through the ledger, one batch per
  partition (month close, the watermark broadcast), handed to the commit queue;
- publish, :mod:`streams.publish` (sends through :mod:`streams.sender`): what a batch emits;
- commit, :mod:`streams.commit`: a batch's outputs, then its changelog records, then its offsets.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from billing.account_record import load_entry
from billing.ledger import Ledger
from billing.merge import KIND_RANK, EventTimeMerger
from runtime.codecs import codec_for
from runtime.settings import Settings, make_private
from runtime.web_auth import is_loopback
from streams.apply import Apply
from streams.commit import CommitQueue, CommitStalled
from streams.intake import RELEASE_WITHIN, Intake, exit_failed, exit_stuck
from streams.metrics import WorkerMetrics
from streams.preflight import heartbeat_interval
from streams.publish import Publisher
from streams.quirks.bulk_restore import BulkRestore, consumer_factory
from streams.quirks.faust_internals import (
    guard_recovery_seeks,
    kafka_producer,
    restore_actives_in_bulk,
    tune_fetches,
)
from streams.seen_table import TableSeenIds, account_of_key
from streams.sender import BatchSender, partition_of
from streams.web import install_account_views

MAX_POLL_RECORDS = 500

log = logging.getLogger("billing.worker")


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs (as opposed to where things are, which is :class:`Settings`)."""

    app_id: str = "billing-ledger"
    store: str = "rocksdb://"  # memory:// for tests; rocksdb:// in production
    processing_guarantee: str = "at_least_once"
    # Idle seconds (counted from the end of the last rebalance at the earliest) after which the
    # worker reads an input that has unread data itself: a broken fetch delays billing, never
    # stops it, and the merge never passes over an input (which would bill out of order).
    stall_timeout: float = 5.0
    tick_interval: float = RELEASE_WITHIN  # how often buffered events are re-checked
    session_timeout: float = 30.0
    producer_linger: float = 0.005  # seconds
    # Each fetch of the inputs waits for this many bytes, this long at most (Faust's own: one
    # record, 1.5 s). Measured at 1,000 usage/s: 0.64x the worker's CPU per event, ~15 ms more
    # to the median latency; at 2,000/s p99 282 ms against 516 (BENCHMARKS.md, Latency). It is
    # also the longest a wait for records lasts while Faust holds a partition back for a full
    # stream buffer (streams/quirks/faust_internals.py, tune_fetches).
    fetch_max_wait: float = 0.02  # seconds
    fetch_min_bytes: int = 64 * 1024
    stuck_seconds: float = 120.0  # no progress for this long: exit EXIT_STUCK, to be restarted
    # Other workers that keep a copy of each table partition, read from its changelog as it is
    # written: a worker that takes partitions over from one that stopped has them (almost) up to
    # date instead of rebuilding them from the changelog. Needs as many other workers. Off by
    # default while a takeover after a crash can lose a batch (streams/README.md, known issue):
    # with copies, Faust hands a crashed worker's partitions to a copy's holder rather than back
    # to the restarted worker, whose own RocksDB is safe.
    standby_replicas: int = 0
    # Read the tables' changelogs in bulk before Faust's per-record recovery reads the rest
    # (streams/quirks/bulk_restore.py); off: Faust's reading alone, as before it existed.
    bulk_restore: bool = True
    web_port: int | None = None  # Faust's web server (account pages, metrics); None: disabled
    web_host: str = "127.0.0.1"  # where it listens; not loopback: web_token is required
    web_token: str | None = None
    worker_name: str = "worker"


def discard_local_tables(datadir: Path) -> None:
    """Under ``exactly_once``, start from the changelog alone: remove the app's table files.

    The commit queue writes a value to the table store when it sends its changelog record, that
    is inside a transaction still open. A worker killed before the transaction commits leaves
    RocksDB with values whose changelog records, and whose outputs, the restarted worker's
    producers abort; Faust's recovery reads only committed changelog records, from the offset
    its last commit persisted, so those values stay. The inputs behind them, redelivered (their
    offsets were in the aborted transaction too), would then look applied already (the account
    holds their offsets) and be skipped: outputs lost for good. So a worker under
    ``exactly_once`` recovers every table from the changelog at each start, as Kafka Streams
    does after an unclean shutdown under exactly-once; the cost is a full changelog read."""
    if datadir.exists():
        shutil.rmtree(datadir)
        log.info("exactly_once: local table files removed (%s); the tables are recovered "
                 "from their changelogs", datadir)


class LedgerWorker:
    """Builds the Faust app and holds the per-process merge buffer."""

    def __init__(self, settings: Settings, ledger: Ledger, options: WorkerOptions,
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings, self.options = settings, options
        self.codec = codec_for(settings)  # Avro, with registry framing iff the settings say so
        self.metrics = WorkerMetrics(settings.topics.inputs) if metrics is None else metrics
        topics = settings.topics
        self.kind_of_topic = {getattr(topics, kind): kind for kind in
                              ("usage", "payments", "accounts", "control")}
        datadir = settings.data_dir / "faust" / options.app_id  # RocksDB files, per app
        if options.processing_guarantee == "exactly_once":
            discard_local_tables(datadir)
        make_private(datadir)
        self.app = faust.App(
            options.app_id,
            broker=[f"kafka://{address}" for address in settings.kafka_bootstrap.split(",")],
            broker_credentials=settings.kafka_security.faust_credentials(),  # TLS/SASL, or None
            store=options.store,
            datadir=str(datadir),
            processing_guarantee=options.processing_guarantee,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            broker_session_timeout=options.session_timeout,
            broker_heartbeat_interval=heartbeat_interval(options.session_timeout),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # Batch what one burst of events produces (changelog, outputs, rated usage): with
            # Faust's default of 0 every record is its own request and throughput collapses.
            producer_linger=options.producer_linger,
            producer_max_batch_size=256 * 1024,
            web_enabled=options.web_port is not None,
            web_port=options.web_port or 6066,
            web_bind=options.web_host,
            # Table routing forwards a request to the owner's canonical URL: on loopback, that
            # is the address the owner listens on (the host name may resolve elsewhere).
            **({"web_host": options.web_host} if is_loopback(options.web_host) else {}),
            key_serializer="raw",
            value_serializer="raw",
            autodiscover=False,
            table_standby_replicas=options.standby_replicas,
            # Revocation and shutdown must not wait for every delivered message to be
            # acknowledged: the merge holds some back until the other inputs catch up, which they
            # do not while Faust has stopped fetching. What is not acknowledged is redelivered.
            stream_wait_empty=False,
            # A fetch hands at most this many records to the streams. Faust pauses a partition's
            # fetching when its stream's buffer (4,096) is 80 % full; records already fetched
            # are still delivered, and each one that finds the buffer full waits in four asyncio
            # tasks (streams/quirks/inline_delivery.py). Unbounded (Faust's default), a backlog
            # overfilled the buffer at every fetch.
            broker_max_poll_records=MAX_POLL_RECORDS,
        )
        guard_recovery_seeks(self.app)  # Faust's standby seek can crash mid-recovery without it
        tune_fetches(self.app, round(options.fetch_max_wait * 1000), options.fetch_min_bytes)
        if options.bulk_restore:  # the changelogs read in bulk, then Faust reads the rest
            restore_actives_in_bulk(self.app, BulkRestore(consumer_factory(self.app),
                                                          self.metrics.restored))
        self.inputs = self.app.topic(*topics.inputs, key_serializer="raw",
                                     value_serializer="raw")
        self.accounts = self.app.Table("accounts", partitions=settings.partitions,
                                       key_type=bytes, value_type=bytes)
        self.clock = self.app.Table("partition-clock", partitions=settings.partitions,
                                    key_type=bytes, value_type=bytes)
        # The accounts' event and payment ids, outside their records (streams/seen_table.py).
        self.seen_table = self.app.Table("seen-ids", partitions=settings.partitions,
                                         key_type=bytes, value_type=bytes)
        self.seen = TableSeenIds(lambda key: self.apply.current(self.seen_table, key, bytes))
        self.ledger = ledger.with_seen(self.seen)
        if options.web_port is not None:
            install_account_views(self.app, self.accounts,
                                  lambda key: self.apply.current(self.accounts, key, load_entry),
                                  options.web_token)
        self.merger = EventTimeMerger(tuple(self.kind_of_topic), {
            topic: KIND_RANK[kind] for topic, kind in self.kind_of_topic.items()})
        self.lock = asyncio.Lock()  # the merge: taken in by the input job, released by apply
        # Batched sends on the app's producer, outside any transaction under either guarantee;
        # under exactly_once the changelog goes through Faust's sends, in its transactions
        # (streams/sender.py).
        transactions = options.processing_guarantee == "exactly_once"
        sender = BatchSender(partial(kafka_producer, self.app))
        self.publisher = Publisher(self.app, sender, self.codec, settings, self.ledger,
                                   self.metrics, options.worker_name)
        # The seen ids become durable after the states they belong to (streams/commit.py).
        self.commits = CommitQueue(stall_seconds=options.stuck_seconds,
                                   sender=None if transactions else sender,
                                   later_tables=[self.seen_table.name])
        self.commits.on_commit = self.metrics.committed
        self.apply = Apply(settings, self.ledger, self.metrics, self.kind_of_topic, self.merger,
                           self.lock, self.publisher, self.commits, self.accounts, self.clock,
                           self.seen_table, self.seen)
        self.intake = Intake(self.app, settings, options, self.codec, self.ledger, self.metrics,
                             self.kind_of_topic, self.merger, self.lock, self.publisher,
                             self.commits, self.apply)
        self.app.agent(self.inputs, name="ledger")(self.intake.consume)
        self.app.timer(options.tick_interval, name="merge-tick")(self.intake.tick)
        self.app.task(self._run_committer)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_settled)
        self.app.on_rebalance_complete.connect(self._on_settled)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    # -- the commit queue, rebalances, shutdown ------------------------------------------

    async def _run_committer(self) -> None:
        """The commit queue's task; a failed delivery stops the worker rather than acknowledge.

        A stalled one ends the process at once: a graceful stop would wait on the same
        stalled producer (Faust flushes it before its last offset commit)."""
        try:
            await self.commits.run()
        except asyncio.CancelledError:
            raise
        except CommitStalled as error:
            exit_stuck(f"commit stalled: {error}")
        except Exception as error:
            exit_failed(error)

    async def _on_settled(self, sender: Any, *_: Any, **__: Any) -> None:
        """Partitions assigned, or their recovery complete: inputs are not stalled before."""
        self.intake.settled_at = time.monotonic()

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        await self.intake.reader.close()

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Before partitions move: commit what was applied, drop what was only buffered (the
        new owner gets it redelivered). Faust does not wait for delivered messages to be
        acknowledged (``stream_wait_empty`` is off: events in the merge buffer wait for input
        Faust no longer fetches, so it would wait for ever); the queued batches get half the
        session timeout to commit, and the rest is discarded rather than written after the
        hand-over."""
        drained = await self.commits.drain(timeout=self.options.session_timeout / 2)
        await self.app.consumer.commit_and_end_transactions()
        self.seen.clear_cache()
        self.apply.forget_entries()
        self.intake.sequence.forget(revoked)
        self.commits.applied.forget(revoked)
        partitions = {tp.partition for tp in revoked}
        for partition in partitions:
            self.merger.drop_partition(partition)
        self.apply.forget_partitions(partitions)
        discarded = self.commits.discard_partitions(partitions, self._partition_of_key)
        log.info("partitions_revoked partitions=%s drained=%s uncommitted_events_discarded=%d",
                 sorted(partitions), drained, discarded)

    def _partition_of_key(self, table_name: str, key: bytes) -> int:
        """The partition of a key of one of the worker's tables (by account, or the clock's)."""
        if table_name == self.clock.name:
            return int(key.removeprefix(b"partition-"))
        if table_name == self.seen_table.name:
            key = account_of_key(key)
        return partition_of(key, self.settings.partitions)

