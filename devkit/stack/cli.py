"""``billing stack up|down|status|topics``: the local Kafka + ClickHouse stack from the shell."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import click

from devkit.stack.lifecycle import stack_status, start_stack, stop_stack
from runtime.settings import Settings, SettingsError, load_settings
from runtime.topics import StackError, ensure_topics

P = ParamSpec("P")
T = TypeVar("T")
LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def _configure_logging(verbose: bool) -> None:
    """key=value lines on stderr, unless the embedding program configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("billing").setLevel(logging.DEBUG if verbose else logging.INFO)
    # kafka-python narrates every connection attempt; the stack logs what matters itself.
    logging.getLogger("kafka").setLevel(logging.INFO if verbose else logging.ERROR)


def _run(action: Callable[Concatenate[Settings, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Turn the stack's and the settings' errors into a clean ``Error: ...`` and exit code 1."""
    try:
        return action(load_settings(), *args, **kwargs)
    except (StackError, SettingsError) as error:
        raise click.ClickException(str(error)) from None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (kafka-python included).")
def stack(verbose: bool) -> None:
    """Local Kafka (KRaft, one node) + ClickHouse server, bound to 127.0.0.1.

    Settings come from BILLING_* variables (ports, BILLING_DATA_DIR); see stack/README.md.
    """
    _configure_logging(verbose)


@stack.command()
@click.option("--no-clickhouse", is_flag=True, help="Do not start the ClickHouse server.")
@click.option(
    "--timeout", default=120.0, show_default=True, help="Seconds to wait for each server."
)
def up(no_clickhouse: bool, timeout: float) -> None:
    """Install what is missing, start Kafka and ClickHouse, create the topics (idempotent)."""
    outcome = _run(start_stack, with_clickhouse=not no_clickhouse, timeout=timeout)
    for part, what in outcome.items():
        click.echo(f"{part}: {what}")


@stack.command()
def down() -> None:
    """Stop Kafka and ClickHouse (SIGTERM, then SIGKILL after 30 s); data is kept."""
    for part, what in _run(stop_stack).items():
        click.echo(f"{part}: {what}")


@stack.command()
def status() -> None:
    """Show each part: running, pid, address, whether it answers. Exit 3 if one is down."""
    parts = _run(stack_status)
    for part in parts:
        click.echo(part.line())
    if not all(part.healthy for part in parts):
        sys.exit(3)


@stack.command()
def topics() -> None:
    """Create the project's topics on BILLING_KAFKA_BOOTSTRAP (any cluster, not only ours)."""
    created = _run(ensure_topics)
    click.echo(f"topics: {'created ' + ', '.join(created) if created else 'all present'}")
