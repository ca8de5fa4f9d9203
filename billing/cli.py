"""The ``billing`` command: one entry point, one sub-command group per concern.

Sub-commands live next to the code they drive and are registered here, so this file stays a table
of contents.
"""

from __future__ import annotations

import click

from billing import __version__


@click.group()
@click.version_option(__version__, prog_name="billing")
def main() -> None:
    """Usage-billing pipeline: ledger, replay oracle, local stack, worker and sink."""


def _register() -> None:
    """Attach sub-commands whose modules exist (each module exposes a click command or group)."""
    import importlib

    for module_name, attribute in (
        ("billing.replay", "replay_command"),
        ("billing.workload", "generate_command"),
        ("billing.stack.cli", "stack"),
        ("billing.produce", "produce_command"),
        ("billing.deadletter", "deadletter"),
        ("streams.cli", "worker_command"),
        ("sinks.cli", "sink_group"),
        ("sinks.cli", "sql_command"),
        ("sinks.cli", "invoice_command"),
        ("sinks.cli", "reconcile_command"),
        ("billing.demo", "demo_command"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name and module_name.startswith(missing.name):
                continue
            raise
        main.add_command(getattr(module, attribute))


_register()


if __name__ == "__main__":
    main()
