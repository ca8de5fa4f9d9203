"""``billing/logs.py``: repeated log lines are rate-limited per logger and message template."""

from __future__ import annotations

import logging

import pytest

from runtime.logfmt import log_event
from runtime.logs import RepeatFilter, install_repeat_filter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def collected(clock: Clock) -> Collect:
    handler = Collect()
    handler.addFilter(RepeatFilter(interval=30.0, clock=clock))
    return handler


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test-logs.{name}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_first_line_passes_then_one_per_interval_with_the_count(clock: Clock,
                                                                collected: Collect) -> None:
    logger = _logger("aiokafka", collected)
    for _second in range(61):  # a broker down for a minute, ~68 attempts a second
        for _ in range(68):
            logger.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
        clock.now += 1
    assert collected.lines == [
        "test-logs.aiokafka: Unable connect to node with id 1: Connect call failed",
        "test-logs.aiokafka: Unable connect to node with id 1: Connect call failed "
        f"({30 * 68 - 1} similar messages suppressed in the last 30s)",
        "test-logs.aiokafka: Unable connect to node with id 1: Connect call failed "
        f"({30 * 68 - 1} similar messages suppressed in the last 30s)",
    ]


def test_arguments_do_not_make_a_message_new(clock: Clock, collected: Collect) -> None:
    logger = _logger("kafka", collected)
    logger.warning("Unable to connect to %s: %r", "broker-1", OSError(111))
    logger.warning("Unable to connect to %s: %r", "broker-2", OSError(113))
    clock.now += 31
    logger.warning("Unable to connect to %s: %r", "broker-3", OSError(111))
    assert collected.lines == [
        "test-logs.kafka: Unable to connect to broker-1: OSError(111)",
        "test-logs.kafka: Unable to connect to broker-3: OSError(111) "
        "(1 similar messages suppressed in the last 31s)",
    ]


def test_templates_and_loggers_are_counted_apart(clock: Clock, collected: Collect) -> None:
    first, second = _logger("one", collected), _logger("two", collected)
    first.info("connection lost")
    first.info("reconnected to %s", "b1")
    second.info("connection lost")
    first.info("connection lost")
    assert collected.lines == ["test-logs.one: connection lost", "test-logs.one: reconnected to b1",
                               "test-logs.two: connection lost"]


def test_structured_events_are_counted_by_event_name(clock: Clock, collected: Collect) -> None:
    """log_event lines share one shape; each event name is its own template (a sink's first
    progress line once disappeared behind its start line)."""
    logger = _logger("sink", collected)
    log_event(logger, "sink.started", group="g")
    log_event(logger, "sink.progress", rows=1)
    log_event(logger, "sink.progress", rows=2)
    assert collected.lines == ["test-logs.sink: event=sink.started group=g",
                               "test-logs.sink: event=sink.progress rows=1"]


def test_a_line_after_a_quiet_interval_has_no_suffix(clock: Clock, collected: Collect) -> None:
    logger = _logger("quiet", collected)
    logger.info("partitions assigned")
    clock.now += 45
    logger.info("partitions assigned")
    assert collected.lines == ["test-logs.quiet: partitions assigned"] * 2


def test_a_record_is_decided_once_for_every_handler(clock: Clock) -> None:
    shared = RepeatFilter(interval=30.0, clock=clock)
    one, two = Collect(), Collect()
    for handler in (one, two):
        handler.addFilter(shared)
    logger = _logger("two-handlers", one)
    logger.addHandler(two)
    logger.error("down")
    logger.error("down")
    clock.now += 30
    logger.error("down")
    assert one.lines == two.lines == ["test-logs.two-handlers: down",
                                      "test-logs.two-handlers: down (1 similar messages "
                                      "suppressed in the last 30s)"]


def test_install_puts_one_filter_on_each_handler_once() -> None:
    logger = logging.getLogger("test-logs.install")
    logger.handlers = [Collect(), Collect()]
    installed = install_repeat_filter(logger)
    install_repeat_filter(logger)
    assert [handler.filters for handler in logger.handlers] == [[installed], [installed]]


def test_a_summarised_record_formats_with_a_formatter_that_rewraps_arguments(
        clock: Clock) -> None:
    """mode's formatter (Faust's logging) turns any non-tuple ``args`` into a tuple and formats
    again: the summary line must carry no arguments left to fill."""
    repeat = RepeatFilter(interval=30.0, clock=clock)

    class Rewrap(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if not isinstance(record.args, tuple):
                record.args = (record.args,)
            return super().format(record)

    def record(value: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1,
                                 "Unable connect to %s: %s", ("node 1", value), None)

    assert repeat.filter(record("100% refused"))
    assert not repeat.filter(record("100% refused"))
    clock.now += 30
    summary = record("100% refused")
    assert repeat.filter(summary)
    assert Rewrap().format(summary) == ("Unable connect to node 1: 100% refused "
                                        "(1 similar messages suppressed in the last 30s)")


def test_the_worker_leaves_the_root_logger_at_its_level_without_faust_s_spinner(tmp_path):
    """At --loglevel warning Faust's terminal spinner set the root logger to DEBUG, so every debug
    call of Faust, mode and aiokafka built a record for it (1.3x the worker's CPU per event at
    1,000 usage/s); the worker runs without it, and its handlers keep the repeat filter."""
    import faust

    from streams.cli import _worker_class

    app = faust.App("spinner-test", autodiscover=False, store="memory://",
                    datadir=str(tmp_path))
    worker = _worker_class()(app, loglevel="warning", quiet=True)
    root = logging.Logger("root-under-test", logging.WARNING)
    root.addHandler(logging.StreamHandler())
    worker.on_setup_root_logger(root, logging.WARNING)
    assert not root.isEnabledFor(logging.DEBUG)
    assert len(root.handlers) == 1
    assert any(isinstance(item, RepeatFilter) for item in root.handlers[0].filters)
