"""``billing snapshots [--out FILE]``: the live ledger's snapshots, as ``billing replay
--snapshots-out`` writes the oracle's.

Read from the compacted ``billing.account-status`` topic (``BILLING_TOPIC_ACCOUNT_STATUS``) to the
end offsets of the moment it starts, with :func:`runtime.account_status.read_snapshots` (the code
``billing reconcile`` uses when it is given no ``--snapshots`` file). The document is
:func:`billing.snapshots.dump_snapshots`: one JSON object keyed by account_id, sorted, the
snapshot fields only, money as strings with 6 fractional digits. Compare it with the oracle's
(``cmp``), hand it to ``billing reconcile --snapshots``, or keep it before a migration.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from billing.snapshots import dump_snapshots
from runtime.account_status import Progress, StatusTopicError, read_snapshots
from runtime.settings import load_settings


def _show_progress(progress: Progress) -> None:
    click.echo(str(progress), err=True)


@click.command("snapshots")
@click.option("--out", "out", default=None, metavar="FILE",
              help="Write the snapshots to FILE (default: stdout).")
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
        snapshots = read_snapshots(load_settings(), stall_timeout=stall_timeout,
                                   on_progress=_show_progress if show else None)
    except StatusTopicError as error:
        raise click.ClickException(str(error)) from None
    document = dump_snapshots(snapshots)
    if out in (None, "-"):
        sys.stdout.buffer.write(document + (b"\n" if sys.stdout.isatty() else b""))
        sys.stdout.buffer.flush()
    else:
        Path(out).write_bytes(document)
        click.echo(f"{len(snapshots):,} account snapshots written to {out}", err=True)
