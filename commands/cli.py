"""The ``billing`` command: one entry point, one sub-command per concern.

Sub-commands live next to the code they drive; this file only lists them, so it reads as the
table of contents of what a user can run, and holds what they share: a bad setting or
configuration file ends any of them with its message, never a traceback.
"""

from __future__ import annotations

import click

from billing import __version__
from billing.config import ConfigError
from commands.deadletter import deadletter
from commands.demo import demo_command
from commands.export import export_command
from commands.replay import replay_command
from commands.snapshots import snapshots_command
from dashboard.cli import dashboard_command
from devkit.stack.cli import stack
from devkit.workload import generate_command
from runtime.produce import produce_command
from runtime.settings import SettingsError
from sinks.cli import invoice_command, reconcile_command, sink_group, sql_command
from streams.cli import worker_command


class ConfigurationError(click.ClickException):
    """A ``BILLING_*`` variable or a configuration file is wrong: exit 2, like a usage error
    (the command could not start), with the message that names what to fix."""

    exit_code = 2


class BillingGroup(click.Group):
    """The ``billing`` group: every sub-command runs inside :meth:`invoke`, so a settings or
    configuration error from any of them, whenever it reads its settings, is turned into a
    message here, once, rather than in each command."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (SettingsError, ConfigError) as error:
            raise ConfigurationError(str(error)) from None


@click.group(cls=BillingGroup)
@click.version_option(__version__, prog_name="billing")
def main() -> None:
    """Usage-billing pipeline: ledger, replay oracle, local stack, worker and sink."""


for command in (replay_command, stack, produce_command, deadletter, worker_command, sink_group,
                sql_command, invoice_command, reconcile_command, snapshots_command,
                generate_command, demo_command, dashboard_command, export_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
