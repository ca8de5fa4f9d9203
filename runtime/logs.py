"""Rate-limited repeated log lines: a broker that is down must not flood the logs.

While Kafka is unreachable, aiokafka, kafka-python and Faust log every reconnection attempt:
about 4,100 "Unable connect" lines a minute. :class:`RepeatFilter` lets the first line of a
message template through, then at most one per interval, which says how many it stood for:

    Unable connect to node with id 1: ... (812 similar messages suppressed in the last 30s)

A template is the logger's name and the message's format string (``record.msg`` before its
arguments are filled in), so the same failure for another broker or with another error text
counts as similar, and different messages never hide each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL = 30.0
_DECISION = "_repeat_filter_passed"  # set on a record once decided (several handlers see it)


@dataclass
class _Template:
    window_start: float  # when the last line of this template was let through
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Let each template's first record through, then one per ``interval`` seconds with a
    ``(N similar messages suppressed in the last Ns)`` suffix. ``clock`` is injectable (tests).

    Meant for handlers (a logger's own filters do not see its children's records): one instance
    may sit on several handlers; a record is decided once and keeps its decision.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval, self.clock = interval, clock
        self._templates: dict[tuple[str, str], _Template] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DECISION, None)
        if decided is not None:
            return bool(decided)
        passed = self._decide(record)
        setattr(record, _DECISION, passed)
        return passed

    def _decide(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        seen = self._templates.get(key)
        if seen is None:
            self._templates[key] = _Template(now)
            return True
        elapsed = now - seen.window_start
        if elapsed < self.interval:
            seen.suppressed += 1
            return False
        if seen.suppressed:
            record.msg = (f"{record.getMessage()} ({seen.suppressed} similar messages "
                          f"suppressed in the last {elapsed:.0f}s)")
            record.args = ()  # the message is final (not None: mode's formatter wraps it)
        self._templates[key] = _Template(now)
        return True


def install_repeat_filter(logger: logging.Logger | None = None,
                          interval: float = DEFAULT_INTERVAL) -> RepeatFilter:
    """Put one :class:`RepeatFilter` on every handler of ``logger`` (default: the root logger,
    which every library's records reach); a handler that has one already keeps it."""
    logger = logging.getLogger() if logger is None else logger
    repeat_filter = RepeatFilter(interval)
    for handler in logger.handlers:
        if not any(isinstance(existing, RepeatFilter) for existing in handler.filters):
            handler.addFilter(repeat_filter)
    return repeat_filter
