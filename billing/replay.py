"""``billing replay``: the billing rules over a JSON-lines file, without Kafka. The oracle.

It runs exactly the ledger the worker runs, acceptance window included: a line's ``ingested_at``
(written by ``billing export`` from the broker's record timestamp) is the reference clock, and a
line without it counts as ingested at its own ``timestamp``. The one thing it adds is the
event-time watermark:
the largest usage timestamp seen so far. When it passes a month's close time (start of the next
month + grace), that month closes for every account, as the worker's watermark broadcast does.
Input that the pipeline would dead-letter is reported (``--dead-letters-out``) and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson

from billing.events import DEFAULT_MAX_ID_BYTES, InvalidEvent, dumps, normalize_input
from billing.ledger import WATERMARK_CAUSE_PREFIX, AccountState, Ledger, snapshot
from billing.watermark import Watermark


@dataclass
class DeadLetter:
    """An input the pipeline could not process, with the reason and where it came from."""

    line_number: int
    reason: str
    field: str | None
    raw: bytes


@dataclass
class Replay:
    """Accounts in memory plus the global watermark; feed it canonical events in order."""

    ledger: Ledger
    accounts: dict[str, AccountState] = field(default_factory=dict)
    watermark: Watermark = field(default_factory=Watermark)  # one for the whole file

    def apply(self, event: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Apply one event; return its output events and rated usage. Raises InvalidEvent.

        Like the worker, only usage that was applied moves the watermark: a usage event that is
        dead-lettered (unknown product, unopened account) closes nothing.
        """
        if event["type"] == "close_period" and not event["account_id"]:
            return self._close_everyone(event["period"], event["event_id"],
                                        event["timestamp"]), None
        transition = self.ledger.apply(self.accounts.get(event["account_id"]), event)
        if transition.state is not None:
            self.accounts[event["account_id"]] = transition.state
        if transition.rated_usage is not None:
            closable = self.watermark.advance(self.ledger, event["timestamp"])
            if closable is not None:
                return [*transition.outputs, *self._close_everyone(
                    closable, WATERMARK_CAUSE_PREFIX + closable,
                    self.ledger.watermark_close_time(closable))], transition.rated_usage
        return transition.outputs, transition.rated_usage

    def _close_everyone(self, period: str, cause_event_id: str,
                        timestamp: datetime) -> list[dict[str, Any]]:
        """Close ``period`` (and any month before it still open) for every account."""
        outputs: list[dict[str, Any]] = []
        for state in self.accounts.values():
            if state.open_period <= period:
                outputs.extend(self.ledger.close_through(state, period, cause_event_id,
                                                         timestamp).outputs)
        return outputs

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {account_id: snapshot(state) for account_id, state in sorted(self.accounts.items())}


def parse_line(line: bytes, line_number: int,
               max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> dict[str, Any] | DeadLetter:
    """One JSON line -> a canonical event, or a DeadLetter saying what is wrong with it."""
    try:
        return normalize_input(orjson.loads(line), max_id_bytes)
    except orjson.JSONDecodeError as error:
        return DeadLetter(line_number, f"not valid JSON: {error}", None, line)
    except InvalidEvent as error:
        return DeadLetter(line_number, error.reason, error.field, line)


def run_replay(replay: Replay, lines: Iterable[tuple[int, bytes]], events_out: IO[bytes],
               rated_out: IO[bytes] | None) -> list[DeadLetter]:
    """Feed lines through ``replay``, writing outputs as they come; return the dead letters."""
    dead_letters: list[DeadLetter] = []
    write = events_out.write
    max_id_bytes = replay.ledger.config.max_id_bytes
    for number, line in lines:
        parsed = parse_line(line, number, max_id_bytes)
        if isinstance(parsed, DeadLetter):
            dead_letters.append(parsed)
            continue
        try:
            outputs, rated = replay.apply(parsed)
        except InvalidEvent as error:
            dead_letters.append(DeadLetter(number, error.reason, error.field, line))
            continue
        for output in outputs:
            write(dumps(output) + b"\n")
        if rated is not None and rated_out is not None:
            rated_out.write(dumps(rated) + b"\n")
    return dead_letters


