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

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson
from tqdm import tqdm

from billing.config import load_config
from billing.config_files import ConfigError
from billing.events import DEFAULT_MAX_ID_BYTES, InvalidEvent, dumps, normalize_input
from billing.ledger import WATERMARK_CAUSE_PREFIX, AccountState, Ledger, next_period, snapshot
from billing.pricebook import load_pricebook


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
    closed_through: str | None = None  # latest month the watermark has closed for everyone
    next_close_time: datetime | None = None  # when the watermark closes the month after it

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
        # Most usage does not move the watermark past a close time: test that inline.
        if transition.rated_usage is not None and (
                self.next_close_time is None or event["timestamp"] >= self.next_close_time):
            closable = self.ledger.closable_through(event["timestamp"])
            if self.closed_through is None or closable > self.closed_through:
                self.closed_through = closable
                self.next_close_time = self.ledger.watermark_close_time(next_period(closable))
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


def read_lines(path: Path, progress: bool) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers; a byte-based progress bar on a terminal."""
    size = path.stat().st_size if path.is_file() else None
    with open(path, "rb") as source, tqdm(total=size, unit="B", unit_scale=True,
                                         desc="replay", disable=not progress) as bar:
        for number, line in enumerate(source, start=1):
            bar.update(len(line))
            if line.strip():
                yield number, line


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


def _open_output(path: str | None) -> IO[bytes]:
    return sys.stdout.buffer if path in (None, "-") else open(path, "wb")


@click.command("replay")
@click.argument("input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--events-out", default=None, help="Output events as JSON lines (default stdout).")
@click.option("--snapshots-out", default=None, help="Final snapshots, one JSON object by account.")
@click.option("--rated-out", default=None, help="Rated usage records as JSON lines.")
@click.option("--dead-letters-out", default=None,
              help="Rejected input lines with reasons, as JSON lines (default: summary on stderr).")
@click.option("--pricebook", "pricebook_path", default=None, help="Price book (JSON or YAML).")
@click.option("--config", "config_path", default=None, help="Billing configuration (JSON/YAML).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: on when stderr is a terminal).")
def replay_command(input_file: Path, events_out: str | None, snapshots_out: str | None,
                   rated_out: str | None, dead_letters_out: str | None,
                   pricebook_path: str | None, config_path: str | None,
                   progress: bool | None) -> None:
    """Run the billing rules over INPUT_FILE (one JSON event a line, in order)."""
    try:
        ledger = Ledger(load_config(config_path), load_pricebook(pricebook_path))
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    replay = Replay(ledger)
    show_progress = os.isatty(2) if progress is None else progress
    events_sink = _open_output(events_out)
    rated_sink = open(rated_out, "wb") if rated_out else None  # noqa: SIM115
    try:
        dead_letters = run_replay(replay, read_lines(input_file, show_progress), events_sink,
                                  rated_sink)
    finally:
        events_sink.flush()
        if events_sink is not sys.stdout.buffer:
            events_sink.close()
        if rated_sink:
            rated_sink.close()
    if snapshots_out:
        Path(snapshots_out).write_bytes(
            orjson.dumps({key: orjson.loads(dumps(value)) for key, value in
                          replay.snapshots().items()}, option=orjson.OPT_INDENT_2))
    if dead_letters_out:
        with open(dead_letters_out, "wb") as sink:
            for letter in dead_letters:
                sink.write(orjson.dumps({"line": letter.line_number, "reason": letter.reason,
                                         "field": letter.field,
                                         "raw": letter.raw.decode("utf-8", "replace").rstrip()})
                           + b"\n")
    if dead_letters:
        click.echo(f"{len(dead_letters)} input line(s) rejected (dead letters)"
                   + ("" if dead_letters_out else "; first: line "
                      f"{dead_letters[0].line_number}: {dead_letters[0].reason}"), err=True)
