"""The ``billing`` command: one entry point, one sub-command per concern.

Sub-commands live next to the code they drive; this file only lists them, so it reads as the
table of contents of what a user can run.
"""

from __future__ import annotations

import click

from billing import __version__
from billing.deadletter import deadletter
from billing.demo import demo_command
from billing.produce import produce_command
from billing.replay import replay_command
from billing.stack.cli import stack
from billing.workload import generate_command
from sinks.cli import invoice_command, reconcile_command, sink_group, sql_command
from streams.cli import worker_command


@click.group()
@click.version_option(__version__, prog_name="billing")
def main() -> None:
    """Usage-billing pipeline: ledger, replay oracle, local stack, worker and sink."""


for command in (replay_command, stack, produce_command, deadletter, worker_command, sink_group,
                sql_command, invoice_command, reconcile_command, generate_command, demo_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
