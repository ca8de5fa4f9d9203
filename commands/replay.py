"""``billing replay INPUT.jsonl``: the billing rules over a file, without Kafka (the oracle).

The rules and the watermark are ``billing.replay``; this command reads the file, shows progress and
writes the outputs, the snapshots and the dead letters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import orjson
from tqdm import tqdm

from billing.config import ConfigError
from billing.ledger import Ledger
from billing.replay import Replay, run_replay
from billing.snapshots import dump_snapshots
from runtime.rules_files import load_config, load_pricebook


def read_lines(path: Path, progress: bool) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers; a byte-based progress bar on a terminal."""
    size = path.stat().st_size if path.is_file() else None
    with open(path, "rb") as source, tqdm(total=size, unit="B", unit_scale=True,
                                         desc="replay", disable=not progress) as bar:
        for number, line in enumerate(source, start=1):
            bar.update(len(line))
            if line.strip():
                yield number, line


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
        Path(snapshots_out).write_bytes(dump_snapshots(replay.snapshots()))
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
