"""``billing snapshots [--out FILE]``: the live ledger's snapshots, as ``billing replay
--snapshots-out`` writes the oracle's.

Read from the compacted ``billing.account-status`` topic (``BILLING_TOPIC_ACCOUNT_STATUS``) to the
end offsets of the moment it starts, with :func:`runtime.account_status.loaded_statuses` (the code
``billing reconcile`` uses when it is given no ``--snapshots`` file, through ``read_snapshots``).
The document is :func:`billing.snapshots.dump_snapshots`' (one JSON object keyed by account_id,
sorted, the snapshot fields only, money as strings with 6 fractional digits), written one account
at a time, so a large topic is never held decoded all at once. Compare it with the oracle's
(``cmp``), hand it to ``billing reconcile --snapshots``, or keep it before a migration.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from billing.events import InvalidEvent
from billing.snapshots import snapshot_document
from runtime.account_status import (
    Progress,
    StatusTopicError,
    iter_snapshots,
    loaded_statuses,
)
from runtime.settings import load_settings


def _show_progress(progress: Progress) -> None:
    click.echo(str(progress), err=True)


def _write(sink: IO[bytes], snapshots: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write the document of ``snapshots`` (sorted by id) piece by piece; how many accounts."""
    accounts = 0

    def counted() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal accounts
        for item in snapshots:
            accounts += 1
            yield item

    sink.writelines(snapshot_document(counted()))
    return accounts


@click.command("snapshots")
@click.option("--out", "out", default=None, metavar="FILE",
              help="Write the snapshots to FILE (default: stdout). FILE is replaced only once "
                   "the whole document is written.")
@click.option("--progress/--no-progress", default=None,
              help="Reading progress on stderr, about every second until the end of the topic "
                   "(default: on when stderr is a terminal).")
@click.option("--stall-timeout", type=click.FloatRange(min=1), default=120.0,
              show_default=True,
              help="Give up when no offset was read for this many seconds before the end.")
def snapshots_command(out: str | None, progress: bool | None, stall_timeout: float) -> None:
    """Write the current ledger snapshots, read from the account-status topic, in the format of
    `billing replay --snapshots-out` (one JSON object keyed by account_id)."""
    show = os.isatty(2) if progress is None else progress
    try:
        with loaded_statuses(load_settings(), stall_timeout=stall_timeout,
                             on_progress=_show_progress if show else None) as statuses:
            if out in (None, "-"):
                _write(sys.stdout.buffer, iter_snapshots(statuses))
                sys.stdout.buffer.write(b"\n" if sys.stdout.isatty() else b"")
                sys.stdout.buffer.flush()
                return
            path = Path(out)
            partial = path.with_name(f".{path.name}.partial")
            try:
                with open(partial, "wb") as sink:
                    accounts = _write(sink, iter_snapshots(statuses))
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
    except (StatusTopicError, InvalidEvent) as error:  # InvalidEvent: money finer than 6 digits
        raise click.ClickException(str(error)) from None
    click.echo(f"{accounts:,} account snapshots written to {out}", err=True)
