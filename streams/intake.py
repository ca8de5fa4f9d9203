"""The worker's input job: the agent's stream into the event-time merge, every offset once.

The agent (:meth:`Intake.consume`) checks each delivery against the next offset its partition must
deliver (:mod:`streams.quirks.input_sequence`), decodes and validates each message into canonical
events (a ``usage_batch`` message into one event per record), dead-letters what is invalid (and
acknowledges it with its dead letters), and buffers the rest in the
:class:`~billing.merge.EventTimeMerger`; what the merge releases is applied by the apply job
(:mod:`streams.apply`). The merge tick (:meth:`Intake.tick`) reads inputs Faust stopped delivering
from Kafka itself, and ends the process (:data:`EXIT_STUCK`) when the worker makes no progress.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from functools import cache, partial
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import faust
from faust.types import TP, EventT, Message

from billing.events import TOPIC_OF_TYPE, InvalidEvent
from billing.ledger import Ledger, from_millis
from billing.ledger import to_millis as millis_of
from billing.merge import EventTimeMerger
from runtime.settings import Settings
from schemas.codec import check_message_size
from streams.commit import CommitQueue, PendingBatch
from streams.metrics import WorkerMetrics, received_lag
from streams.publish import Publisher
from streams.quirks.ack_offsets import commit_applied_offsets
from streams.quirks.broker_reader import BrokerReader
from streams.quirks.faust_internals import committed_offsets, consider_for_commit, end_seen_at
from streams.quirks.inline_delivery import deliver_inline
from streams.quirks.input_sequence import FilledEvent, InputSequence

if TYPE_CHECKING:
    from streams.apply import Apply
    from streams.worker import WorkerOptions

log = logging.getLogger("billing.worker")

# The exit status of a worker that stopped because it made no progress for ``stuck_seconds`` (Kafka
# stopped confirming deliveries, or stopped delivering input that is there): EX_TEMPFAIL, try
# again. Its supervisor restarts it; nothing unacknowledged is lost.
EXIT_STUCK = 75

# The agent takes up to RELEASE_EVERY events into the merge, for at most RELEASE_WITHIN seconds
# since it last applied, before it applies what the merge releases: a batch's own costs (its
# commit, the Kafka produce requests of its outputs and changelog records) are then paid once per
# batch, not once per event. A trickle of input is applied RELEASE_WITHIN after it started (the
# merge tick releases what no later input did), a burst at RELEASE_EVERY events; an event after a
# quiet spell at once. Measured at 1,000 usage/s: releasing at every pause in the input, batches
# held one event or two and the worker paid ~900 µs of CPU per event, mostly produce requests.
RELEASE_EVERY = 1_000
RELEASE_WITHIN = 0.02  # seconds; also the merge tick's interval

# Seconds an input partition's end may stay ahead of the last message taken in before the worker
# reads that tail from Kafka itself: it may hold only transaction markers, which are never
# delivered (``Intake._read_empty_tails``). Faust delivers a real message within
# milliseconds of its append when it is not busy; a busy worker receives others meanwhile.
EMPTY_TAIL_AFTER = 0.5
# A longer tail (an aborted transaction's records, or messages Faust has not delivered yet, as
# right after an assignment) is read only after ``stall_timeout`` seconds without a message.
EMPTY_TAIL_MOST = 64
# Seconds since anyone last looked at the end of an input read to its end that holds events back
# (they were fetched after that look) before the worker asks Kafka for that end itself.
PROBE_STALE_AFTER = 0.1


class _Input(NamedTuple):
    """One event of an input message, as the merge buffers it: ``index`` within its message (0
    but for a batch's records, ``batched``), ``last``: the last event of its message that the
    merge gets."""

    event: EventT
    canonical: dict[str, Any]
    repeat: bool
    index: int
    last: bool
    batched: bool


class Intake:
    """The input job (see the module docstring); ``apply`` applies what the merge releases."""

    def __init__(self, app: faust.App, settings: Settings, options: WorkerOptions, codec: Any,
                 ledger: Ledger, metrics: WorkerMetrics, kind_of_topic: dict[str, str],
                 merger: EventTimeMerger, lock: asyncio.Lock, publisher: Publisher,
                 commits: CommitQueue, apply: Apply) -> None:
        self.app, self.settings, self.options, self.codec = app, settings, options, codec
        self.ledger, self.metrics, self.kind_of_topic = ledger, metrics, kind_of_topic
        self.merger, self.lock, self.publisher, self.commits = merger, lock, publisher, commits
        self.apply = apply
        self.reader = BrokerReader(settings, options.app_id,
                                   read_committed=options.processing_guarantee == "exactly_once")
        self.sequence = InputSequence(self.reader, on_jump=self._log_jump,
                                      on_empty=self._pass_empty)
        # When each input partition last had a message taken in (Faust's, or read from Kafka):
        # a partition whose end stays ahead of it is probed for offsets that hold no message
        # (``_read_empty_tails``).
        self.received_at: dict[TP, float] = {}
        # Input ends the worker asked Kafka for itself: tp -> (end offset, when asked, wall ms).
        self.probed_ends: dict[TP, tuple[int, float]] = {}
        self.receiving = asyncio.Lock()  # one partition's offsets go into the merge in order
        # Monotonic time since which the agent has been waiting for input with nothing to do
        # (None while it is processing). Only an idle agent can tell a stalled input: a busy one,
        # or one blocked on a full producer buffer, is simply not reading yet.
        self.idle_since: float | None = None
        # When the partitions were last assigned or their recovery ended: right after a
        # rebalance every input is still unfetched, and an agent idle since before must not take
        # them for stalled.
        self.settled_at = time.monotonic()

    async def consume(self, stream: faust.Stream) -> None:
        # Here, not in __init__: the consumer exists once the agent runs, and a scrape must not
        # make Faust create it from the metrics thread.
        self.metrics.set_lag_source(partial(received_lag, self.app.consumer.highwater,
                                            self.sequence.next_offset))
        commit_applied_offsets(self.app.consumer, self.commits.applied,
                               self.sequence.start_offset)
        deliver_inline(self.app.consumer)
        inputs = stream.noack()
        taken_in = 0
        consumer = self.app.consumer
        async for event in inputs.events():
            self.idle_since = None
            tp = event.message.tp
            # Read before anything else: the message was fetched at or before it.
            fetched_at = end_seen_at(consumer, tp) or now_ms()
            async with self.receiving:
                self.received_at[tp] = time.monotonic()
                try:
                    admitted = await self.sequence.admit(tp, event.message.offset)
                except Exception as error:  # Kafka unreachable: exit, to be restarted
                    exit_stuck(f"could not read skipped input of {tp}: {error!r}")
                try:
                    if admitted.missing:  # rare: no coroutine per message for nothing
                        await self._receive_read(admitted.missing)
                    # A repeat goes through too: the ledger skips it by the offsets in the
                    # account's state, and it is acknowledged only after the first copy.
                    await self._receive(event, fetched_at, repeat=admitted.repeat)
                except Exception as error:
                    exit_failed(error)
            taken_in += 1
            if (taken_in >= RELEASE_EVERY
                    or time.monotonic() - self.apply.released_at >= RELEASE_WITHIN):
                try:
                    await self.apply.release_all(self._caught_up_as_of)
                except Exception as error:
                    exit_failed(error)
                taken_in = 0
            await self.commits.wait_for_room()
            self.idle_since = time.monotonic()

    async def _receive(self, event: EventT, fetched_at: float, repeat: bool = False) -> None:
        """Decode one input message; dead-letter it, or buffer its events in the merge (the
        next :meth:`~streams.apply.Apply.release_all` applies what it releases), with
        ``fetched_at`` (wall-clock ms, at or after its fetch: see :meth:`_caught_up_as_of`). A
        batch message (``usage_batch``) puts each record in the merge with its own event time; a
        record bad alone is dead-lettered alone. The message is acknowledged with its last event
        in the merge, or with its dead letters if none is valid. A repeat of an invalid message
        is not dead-lettered again: its first copy was, in a batch the commit queue commits
        before this one."""
        message = event.message
        if message.tp not in self.sequence.next_offset:
            return  # revoked while it was read: not acknowledged, the next owner gets it
        try:
            decoded = self._decode(message.topic, message.key, message.value)
        except InvalidEvent as error:
            decoded = [error]
        valid = [(index, item) for index, item in enumerate(decoded)
                 if not isinstance(item, InvalidEvent)]
        refused = [item for item in decoded if isinstance(item, InvalidEvent)]
        if refused:
            dead_letters = PendingBatch(message.partition, [] if valid else [event])
            if not repeat:
                for error in refused:
                    dead_letters.outputs.append(
                        await self.publisher.dead_letter(message, error.reason, error.field))
            self.commits.submit(dead_letters, ())
        if not valid:
            return
        ingested_at = None
        if message.timestamp is not None and message.timestamp >= 0:
            # The broker's append time (LogAppendTime topics): the acceptance window's clock.
            ingested_at = from_millis(round(message.timestamp * 1000))
        last = valid[-1][0]
        async with self.lock:
            for index, canonical in valid:
                if ingested_at is not None:
                    canonical["ingested_at"] = ingested_at
                self.merger.add(message.topic, message.partition,
                                millis_of(canonical["timestamp"]), message.offset,
                                _Input(event, canonical, repeat, index, index == last,
                                       len(decoded) > 1), fetched_at)

    async def _receive_read(self, messages: list[Message]) -> None:
        """Take in messages the worker read from Kafka itself (fetched by now, at the latest)."""
        read_at = now_ms()
        for message in messages:
            await self._receive(FilledEvent(message, self.app.consumer), read_at)

    def _inputs_holding_back(self) -> list[TP]:
        """The inputs with nothing buffered of each partition whose buffered events wait: what
        their release may be waiting on."""
        return [TP(topic, partition) for partition in self.merger.partitions_with_pending()
                for topic in self.merger.waiting_for(partition)]

    def _pass_empty(self, tp: TP, offsets: list[int]) -> None:
        """Offsets of ``tp`` that hold no message (transaction markers): nothing to apply, and
        the offset commit must pass them (:mod:`streams.quirks.ack_offsets`), also in a
        partition where nothing else is acknowledged."""
        self.commits.applied.add_empty(tp, offsets)
        consider_for_commit(self.app.consumer, tp)
        log.info("input_offsets_without_message topic=%s partition=%d offsets=%d-%d count=%d",
                 tp.topic, tp.partition, offsets[0], offsets[-1], len(offsets))

    def _log_jump(self, tp: TP, expected: int, delivered: int, read: int) -> None:
        self.metrics.read_directly(tp.topic, "skipped", read)
        log.warning("input_gap_filled topic=%s partition=%d expected=%d delivered=%d "
                    "read_from_kafka=%d", tp.topic, tp.partition, expected, delivered, read)

    def _decode(self, topic: str, key: bytes | None,
                value: bytes | None) -> list[dict[str, Any] | InvalidEvent]:
        """The message's events (a batch's records in order, each valid or refused alone); raises
        :class:`InvalidEvent` when the whole message is refused."""
        kind = self.kind_of_topic[topic]
        check_message_size(key, value, self.settings.max_message_bytes)
        if value is None:
            raise InvalidEvent("empty message value (tombstone) on an input topic")
        decoded = self.codec.decode_inputs(kind, value, self.ledger.config.max_id_bytes)
        canonical = next((item for item in decoded if not isinstance(item, InvalidEvent)), None)
        if canonical is None:
            return decoded
        expected_kind = TOPIC_OF_TYPE[canonical["type"]]
        if expected_kind != kind:
            raise InvalidEvent(f"{canonical['type']} events belong on the "
                               f"{getattr(self.settings.topics, expected_kind)} topic, not {topic}",
                               "type")
        account_key = canonical["account_id"].encode()
        if (key or b"") != account_key:
            raise InvalidEvent(f"message key {key!r} differs from account_id "
                               f"{canonical['account_id']!r}; key input by account_id so one "
                               "worker owns each account", "account_id")
        return decoded

    async def tick(self) -> None:
        """Release events held back by a lagging input once it caught up; read an input Faust
        stopped delivering; exit if input is waiting but has not arrived for ``stuck_seconds``."""
        try:
            await self.apply.release_all(self._caught_up_as_of)
            await self._probe_stale_ends()
            await self._read_stalled_inputs()
            await self._read_empty_tails()
        except Exception as error:
            exit_failed(error)
        reason = self._stuck_reason()
        if reason:
            exit_stuck(f"{reason} for {self.options.stuck_seconds:.0f} s")

    async def _read_stalled_inputs(self, most: int = 2_000) -> None:
        """Read up to ``most`` messages of each input that holds buffered events back and has
        data Faust has not delivered while the agent sat idle for ``stall_timeout`` (outside a
        rebalance): seen under heavy load, Faust's fetcher stops delivering a partition."""
        app, idle_since = self.app, self._idle_since_settled()
        if idle_since is None or time.monotonic() - idle_since < self.options.stall_timeout:
            return
        for tp in self._inputs_holding_back():
            highwater = app.consumer.highwater(tp)
            if highwater is None or self._read_to_end(tp) is not False:
                continue
            async with self.receiving:
                start = self.sequence.next_offset.get(tp)
                try:
                    messages = await self.sequence.read_ahead(
                        tp, highwater if start is None else min(highwater, start + most))
                except Exception as error:  # Kafka unreachable: exit, to be restarted
                    exit_stuck(f"could not read stalled input {tp}: {error!r}")
                self.metrics.read_directly(tp.topic, "stalled", len(messages))
                log.warning("input_stalled_read topic=%s partition=%d from=%s read=%d "
                            "highwater=%d", tp.topic, tp.partition, start, len(messages),
                            highwater)
                await self._receive_read(messages)

    async def _read_empty_tails(self) -> None:
        """Read from Kafka an input partition whose end stays ahead of the last message taken in
        for ``EMPTY_TAIL_AFTER`` seconds (under either guarantee: any producer of the inputs may
        write in transactions).

        Every transaction that writes to a partition ends with a marker there, which takes an
        offset and is never delivered: after a transaction of a producer of the inputs (seen:
        the worker's own month-close broadcasts, before they left the transactions), the
        partition ends one offset (or more, after an aborted transaction) past its last
        message, and nothing Faust delivers ever moves the worker past it. Until something does,
        the merge holds that partition's events back (the input is not read to its end) and the
        offset commit stops at the marker; left alone, the worker exited as stuck. The read
        returns what the tail holds: messages (taken in like any other; Faust's own copies come
        later as repeats) and offsets without one (done: ``_pass_empty``). Reading is always
        safe; the delays only keep it to tails Faust is not about to deliver anyway."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        consumer, now = self.app.consumer, time.monotonic()
        for tp in [tp for tp in consumer.assignment() if tp.topic in self.kind_of_topic]:
            quiet = now - max(self.received_at.get(tp, 0.0), self.settled_at)
            if quiet < EMPTY_TAIL_AFTER or self._read_to_end(tp) is not False:
                continue
            highwater = consumer.highwater(tp)  # the last stable offset, under read_committed
            start = self.sequence.next_offset.get(tp)
            if start is None:  # nothing taken in since the assignment: from the commit
                start = committed_offsets(consumer).get(tp) or 0
            if highwater - start > EMPTY_TAIL_MOST and quiet < self.options.stall_timeout:
                continue  # most likely messages Faust is about to deliver: give it time
            async with self.receiving:
                self.received_at[tp] = time.monotonic()  # at most one read per interval
                try:
                    messages = await self.sequence.read_ahead(tp, min(highwater, start + 2_000))
                except Exception as error:  # Kafka unreachable: exit, to be restarted
                    exit_stuck(f"could not read the end of input {tp}: {error!r}")
                if messages:
                    self.metrics.read_directly(tp.topic, "stalled", len(messages))
                    log.info("input_tail_read topic=%s partition=%d from=%s read=%d "
                             "highwater=%d", tp.topic, tp.partition, start, len(messages),
                             highwater)
                await self._receive_read(messages)

    def _stuck_reason(self) -> str | None:
        """Why the worker makes no progress, if it does not: idle (not rebalancing or
        recovering, nothing waiting for a commit) for ``stuck_seconds``, and yet an input has
        messages after the last one received (Faust stopped fetching, seen under heavy load), or
        an input's committed offset stays before messages already applied (an offset that was
        never applied holds the commit back: see :mod:`streams.quirks.ack_offsets`). A restart
        resumes from the committed offsets."""
        app, idle_since = self.app, self._idle_since_settled()
        if (idle_since is None or time.monotonic() - idle_since < self.options.stuck_seconds
                or self.commits.pending_events or self.apply.closing):
            return None
        inputs = [tp for tp in app.consumer.assignment() if tp.topic in self.kind_of_topic]
        if any(self._read_to_end(tp) is False for tp in inputs):
            return "input waiting but nothing received"
        committed = committed_offsets(app.consumer)
        received = self.sequence.next_offset
        behind = [tp for tp in inputs if tp in received and received[tp] > (committed.get(tp) or 0)]
        if behind:
            tp = behind[0]
            applied = sorted(self.commits.applied.offsets.get(tp, ()))
            return (f"commit behind applied input ({len(behind)} partitions; {tp.topic}/"
                    f"{tp.partition}: committed {committed.get(tp)}, received up to "
                    f"{received[tp] - 1}, applied and uncommitted {applied[:5]}"
                    f"{' ...' if len(applied) > 5 else ''})")
        return None

    def _read_to_end(self, tp: TP) -> bool | None:
        """Whether every message of input ``tp`` up to its log end has been received (counting
        from the committed offset before the first); None while its end is unknown."""
        consumer = self.app.consumer
        highwater = consumer.highwater(tp)
        if highwater is None:
            return None
        return self._next_offset(tp) >= highwater

    def _next_offset(self, tp: TP) -> int:
        """The next offset of input ``tp`` to receive (the committed one before the first)."""
        next_offset = self.sequence.next_offset.get(tp)
        if next_offset is None:
            next_offset = committed_offsets(self.app.consumer).get(tp) or 0
        return next_offset

    def _caught_up_as_of(self, partition: int) -> Any:
        """As of which fetch (wall-clock ms) each input of ``partition`` is known to hold nothing
        the worker has not received (``-math.inf``: not known): what the merge may pass it with
        (:meth:`billing.merge.EventTimeMerger.release`). The consumer's end of a partition is as
        old as the last fetch response that covered it, and aiokafka leaves a partition out of
        the fetches while it holds records of it: so "read to its end" holds only as of that
        response, and a payment fetched later may follow a usage appended in between. The
        newest of the consumer's answer and the worker's own look (:meth:`_probe_stale_ends`)
        counts. Asked once per input for one release (nothing is received while it runs)."""
        return cache(lambda topic: self._caught_up_since(TP(topic, partition)))

    def _caught_up_since(self, tp: TP) -> float:
        seen = end_seen_at(self.app.consumer, tp)  # before the end: that is at least as new
        caught_up = -math.inf
        if seen is not None and self._read_to_end(tp):
            caught_up = seen
        probed = self.probed_ends.get(tp)
        if probed is not None and probed[1] > caught_up and \
                self._next_offset(tp) >= probed[0]:
            caught_up = probed[1]
        return caught_up

    async def _probe_stale_ends(self) -> None:
        """Ask Kafka for the ends of the inputs read to their end that hold buffered events back,
        when neither the consumer nor the worker has looked at them for ``PROBE_STALE_AFTER``:
        the consumer's next fetch would tell too, but it may wait (up to ``fetch_max_wait``:
        :class:`~streams.worker.WorkerOptions`) for more data, and a partition still holding
        records is left out of the fetches, whose answers are then older than its events."""
        if self.app.rebalancing or self.app.in_recovery:
            return
        consumer, looked_before = self.app.consumer, now_ms() - PROBE_STALE_AFTER * 1000
        stale = []
        for tp in self._inputs_holding_back():
            looked = max((end_seen_at(consumer, tp) or 0.0),
                         self.probed_ends.get(tp, (0, 0.0))[1])
            if looked < looked_before and self._read_to_end(tp):
                stale.append(tp)
        if not stale:
            return
        asked_at = now_ms()  # the answer is as new as the question, at least
        try:
            ends = await self.reader.end_offsets(stale)
        except Exception as error:  # Kafka unreachable: the consumer's next fetch tells
            log.warning("input_end_probe_failed partitions=%d error=%r", len(stale), error)
            return
        for tp, end in ends.items():
            self.probed_ends[tp] = (end, asked_at)
        await self.apply.release_all(self._caught_up_as_of)

    def _idle_since_settled(self) -> float | None:
        """Since when the agent has been idle, counting from the end of the last rebalance at
        the earliest; None while it is processing, or while a rebalance or recovery runs."""
        if self.idle_since is None or self.app.rebalancing or self.app.in_recovery:
            return None
        return max(self.idle_since, self.settled_at)


def now_ms() -> float:
    """The wall clock in milliseconds: aiokafka's clock for its fetches (``end_seen_at``)."""
    return time.time() * 1000


def exit_failed(error: Exception) -> NoReturn:
    """A send or a commit Kafka refused (a topic not authorized or deleted, a record too
    large): an infrastructure fault, never one event's (those are dead letters). Exit at once
    with the traceback: Faust's graceful stop would flush a producer that retries the refused
    send for ever (seen: a worker without WRITE on the status topic never exited)."""
    log.error("worker_failed error=%r", error, exc_info=error)
    exit_stuck(f"a send or commit failed: {error!r}")


def exit_stuck(why: str) -> NoReturn:
    """End the process at once: a graceful stop would wait on whatever is stuck (Faust
    flushes the producer and waits for its streams before its last offset commit)."""
    log.error("worker_stuck exiting=%d reason=%r", EXIT_STUCK, why)
    logging.shutdown()
    os._exit(EXIT_STUCK)
