"""Commands for the ClickHouse side: ``billing sink run|migrate``, ``billing sql``,
``billing invoice`` and ``billing reconcile``.

Each command opens the writer named by ``BILLING_CLICKHOUSE_URL`` (a server or an embedded chdb
directory) and applies the missing migrations first, so any of them works on an empty ClickHouse.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from billing.events import ZERO
from runtime.logs import install_repeat_filter
from runtime.metrics import metrics_endpoint, metrics_options, new_registry
from runtime.settings import Settings, SettingsError, load_settings
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, open_writer
from sinks.cluster import cluster_layout
from sinks.display import format_table, format_value
from sinks.metrics import SinkMetrics
from sinks.reconcile import load_events, load_snapshots, reconcile
from sinks.sink import GROUP_ID, SinkConfig, SinkStats, build_sink
from sinks.sqlfiles import load_query, query_names

PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
METRICS_PORT_VARIABLE = "BILLING_SINK_METRICS_PORT"


@contextmanager
def _clean_errors(settings: Settings) -> Iterator[None]:
    """A ClickHouse error ends the command with its message, not a traceback."""
    try:
        yield
    except ClickHouseError as error:
        raise click.ClickException(f"ClickHouse at {settings.clickhouse_url}: {error}") from None


def _writer(settings: Settings) -> ClickHouseWriter:
    """The configured writer with the migrations applied."""
    with _clean_errors(settings):
        writer = open_writer(settings)
        writer.apply_ddl()
    return writer


def _period(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not PERIOD.match(value):
        raise click.BadParameter(f"{value!r} is not a month like 2026-01")
    return value


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs; a value made only of digits is a number (for LIMIT)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not name=value", param_hint="--param")
        params[name] = int(value) if value.isdigit() else value
    return params


def _group_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("the consumer group name must not be empty")
    return value


@click.group("sink")
def sink_group() -> None:
    """ClickHouse tables and the sink that fills them from Kafka."""


@sink_group.command("migrate")
@click.option("--cluster", metavar="NAME", default=None,
              help="Replicated, sharded: *_local tables and Distributed tables over them, "
                   "each ON CLUSTER NAME (see docs/operations.md).")
def migrate_command(cluster: str | None) -> None:
    """Apply the migrations the database has not recorded (sinks/migrations, in order) and
    print each one; refuses when an applied file was edited or is missing."""
    settings = load_settings()
    try:
        layout = cluster_layout(settings, cluster) if cluster else None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    with _clean_errors(settings), open_writer(settings) as writer:
        for line in writer.apply_ddl(layout).lines():
            click.echo(line)


@sink_group.command("run")
@click.option("--batch-rows", default=5000, show_default=True, help="Insert at this many rows.")
@click.option("--batch-seconds", default=1.0, show_default=True,
              help="...or when the oldest buffered message is this old.")
@click.option("--progress-seconds", default=5.0, show_default=True,
              help="How often to print rows written and lag (and update the lag metric).")
@click.option("--group", "group_id", default=GROUP_ID, show_default=True, metavar="NAME",
              callback=_group_name,
              help="Kafka consumer group. A new name starts from the oldest retained message, "
                   "alongside the running sink: e.g. to fill a fresh database.")
@metrics_options(METRICS_PORT_VARIABLE)
def run_command(batch_rows: int, batch_seconds: float, progress_seconds: float, group_id: str,
                metrics_host: str, metrics_port: int) -> None:
    """Consume billing.account-state and billing.usage-rated into ClickHouse until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_repeat_filter()  # a broker down for a minute: a few lines, not thousands
    registry = new_registry()
    try:
        settings = load_settings()
        with metrics_endpoint(registry, metrics_host, metrics_port, METRICS_PORT_VARIABLE):
            _run_sink(settings, SinkConfig(batch_rows=batch_rows, batch_seconds=batch_seconds),
                      progress_seconds, registry, group_id)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _run_sink(settings: Settings, config: SinkConfig, progress_seconds: float,
              registry: CollectorRegistry, group_id: str) -> None:
    """The sink in consumer group ``group_id`` until SIGINT or SIGTERM, its stats exposed
    through ``registry``."""
    writer = _writer(settings)
    sink = build_sink(settings, writer, config, group_id=group_id)
    registry.register(SinkMetrics(sink.stats))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sink.stop())

    def progress(stats: SinkStats, lag: dict[Any, int]) -> None:
        click.echo(f"messages {stats.messages}  rows written {stats.rows_written}  "
                   f"lag {sum(lag.values())}  "
                   f"duplicates dropped {stats.duplicates_dropped}  "
                   f"undecodable {stats.undecodable}  retries {stats.retries}", err=True)

    click.echo(f"sink: {settings.kafka_bootstrap} (group {group_id}) -> "
               f"{settings.clickhouse_url}", err=True)
    try:
        sink.run(on_progress=progress, progress_seconds=progress_seconds)
    finally:
        sink.close()
        writer.close()
    progress(sink.stats, {})


@click.command("sql")
@click.argument("sql", required=False)
@click.option("--query", "query_name", type=click.Choice(query_names()),
              help="Run a documented query from sinks/queries instead of SQL.")
@click.option("--param", "-p", "pairs", multiple=True, metavar="NAME=VALUE",
              help="Fill %(NAME)s in the query; repeatable.")
def sql_command(sql: str | None, query_name: str | None, pairs: tuple[str, ...]) -> None:
    """Run SQL (or a documented query) on ClickHouse and print the result as a table."""
    if (sql is None) == (query_name is None):
        raise click.UsageError("give either SQL or --query NAME")
    text = load_query(query_name) if query_name else sql
    params = _params(pairs)
    settings = load_settings()
    with _writer(settings) as writer, _clean_errors(settings):
        names, rows = writer.query_with_names(text, params or None)
    click.echo(format_table(names, rows))


@click.command("invoice")
@click.argument("account_id")
@click.argument("period", callback=_period)
def invoice_command(account_id: str, period: str) -> None:
    """Print an account's month: usage per product with cost, credits applied, the invoice."""
    params = {"account_id": account_id, "period": period}
    with _writer(load_settings()) as writer:
        sections = [(title, *writer.query_with_names(load_query(name), params)) for title, name in (
            ("Usage charged to the month (per product)", "invoice_lines"),
            ("Quantities (per product and meter)", "invoice_quantities"),
            ("Credits and payments applied during the month", "invoice_credits"),
            ("Invoice", "invoice_issued"),
        )]
    click.echo(f"Account {account_id}, {period}\n")
    for title, names, rows in sections:
        click.echo(f"{title}\n{format_table(names, rows)}\n")
    _, line_names, lines = sections[0]
    usage_total = sum((line[line_names.index("cost")] for line in lines), start=ZERO)
    click.echo(f"Usage total: {format_value(usage_total)}")


@click.command("reconcile")
@click.option("--snapshots", "snapshots_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Final snapshots from `billing replay --snapshots-out`.")
@click.option("--events", "events_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output events from `billing replay --events-out`: invoices, credits "
                   "purchased, invoice payments and free credit per account.")
def reconcile_command(snapshots_file: Path, events_file: Path | None) -> None:
    """Compare ClickHouse with the ledger's snapshots, money per account (spend, credits
    purchased, invoice payments, invoices, balances); exit 1 on any difference."""
    snapshots = load_snapshots(snapshots_file)
    events = load_events(events_file) if events_file else None
    with _writer(load_settings()) as writer:
        report = reconcile(writer, snapshots, events=events)
    for difference in report.differences:
        click.echo(str(difference))
    verdict = "OK" if report.ok else f"{len(report.differences)} difference(s)"
    click.echo(f"reconciled {report.accounts} accounts, {report.invoices} invoices: {verdict}")
    sys.exit(0 if report.ok else 1)
