"""Commands for the ClickHouse side: ``billing sink run|migrate``, ``billing sql``,
``billing invoice`` and ``billing reconcile``.

Each command opens the writer named by ``BILLING_CLICKHOUSE_URL`` (a server or an embedded chdb
directory) and applies the missing migrations first, so any of them works on an empty ClickHouse.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from prometheus_client import CollectorRegistry

from runtime.account_status import StatusTopicError, read_snapshots
from runtime.logs import install_repeat_filter
from runtime.metrics import metrics_endpoint, metrics_options, new_registry
from runtime.settings import Settings, SettingsError, load_settings
from sinks.clickhouse import ClickHouseError, ClickHouseWriter, open_writer
from sinks.cluster import cluster_layout
from sinks.display import (
    exact_sum,
    format_csv,
    format_json_lines,
    format_money_value,
    format_table,
    format_value,
)
from sinks.metrics import SinkMetrics
from sinks.reconcile import load_events, load_snapshots, reconcile
from sinks.sink import GROUP_ID, SinkConfig, SinkStats, build_sink
from sinks.sqlfiles import load_query, query_info, query_names, query_params

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
    """The configured writer with the migrations applied (closed again if they fail: chdb
    holds one data directory per process)."""
    with _clean_errors(settings):
        writer = open_writer(settings)
        try:
            writer.apply_ddl()
        except BaseException:
            writer.close()
            raise
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
        if name in params:
            raise click.BadParameter(f"{name!r} is given twice", param_hint="--param")
        params[name] = int(value) if value.isascii() and value.isdigit() else value
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


# A FORMAT clause ends a statement (optionally followed by SETTINGS); literals and comments are
# blanked out first, so a string or a column called "format" does not count.
_LITERALS_AND_COMMENTS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`|--[^\n]*|/\*.*?\*/""",
    re.DOTALL)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+[A-Za-z_]\w*\s*(?:\bSETTINGS\b.*)?;?\s*$",
                            re.IGNORECASE | re.DOTALL)
_QUERY_NAME = re.compile(r"[A-Za-z_]\w*")
OUTPUT_FORMATS = ("table", "csv", "json")


class SqlUsageError(click.ClickException):
    """A usage error of `billing sql` (parameters, query name, FORMAT clause): one line, exit 2."""

    exit_code = 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def _query_errors(settings: Settings) -> Iterator[None]:
    """For ``sql`` and ``invoice``: a ClickHouse error (server or chdb) is one line with the
    server's message and exit 1, never a traceback."""
    try:
        yield
    except ClickHouseError as error:
        raise click.ClickException(
            _one_line(f"ClickHouse at {settings.clickhouse_url}: {error}")) from None
    except click.ClickException as error:  # from _writer: opening or the DDL failed
        error.message = _one_line(error.message)
        raise


def _has_format_clause(sql: str) -> bool:
    return bool(_FORMAT_CLAUSE.search(_LITERALS_AND_COMMENTS.sub(" ", sql)))


def _check_params(sql: str, params: dict[str, Any], what: str) -> None:
    """Every placeholder of ``sql`` is given and every given parameter is used (exit 2)."""
    needed = query_params(sql)
    listed = ", ".join(needed) if needed else "none"
    for name in needed:
        if name not in params:
            raise SqlUsageError(f"{what} needs -p {name}=VALUE (its parameters: {listed})")
    for name in params:
        if name not in needed:
            raise SqlUsageError(f"{what} has no parameter {name!r} (its parameters: {listed})")
    if params:
        try:
            sql % dict.fromkeys(params, "")
        except (ValueError, TypeError) as error:
            raise SqlUsageError(f"{what}: with -p parameters a literal % must be written %% "
                                 f"({error})") from None


def _sql_text(text: str | None, query_name: str | None) -> tuple[str, str]:
    """(SQL, how error messages name it) from ``QUERY`` or ``--query NAME``."""
    if (text is None) == (query_name is None):
        raise click.UsageError("give a documented query's name or SQL (QUERY), or --query NAME")
    name = query_name or (text if text in query_names() else None)
    if name is not None:
        return load_query(name), f"query {name}"
    assert text is not None
    if _QUERY_NAME.fullmatch(text.strip()):
        raise SqlUsageError(f"no documented query {text.strip()!r}; known: "
                             f"{', '.join(query_names())} (see billing sql --help)")
    if _has_format_clause(text):
        raise SqlUsageError("remove the FORMAT clause: billing sql chooses the output format; "
                             "use --format table|csv|json")
    return text.strip().removesuffix(";"), "the SQL"


def _print_result(names: list[str], rows: list[tuple[Any, ...]], output_format: str) -> None:
    if output_format == "csv":
        click.echo(format_csv(names, rows), nl=False)
    elif output_format == "json":
        for line in format_json_lines(names, rows):
            click.echo(line)
    else:
        click.echo(format_table(names, rows))


class _SqlCommand(click.Command):
    """``billing sql``, whose help ends with the documented queries and their parameters."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        queries = [query_info(name) for name in query_names()]
        with formatter.section("Documented queries (QUERY; each parameter as -p NAME=VALUE)"):
            formatter.write_dl([
                (info.name, f"{info.description} Parameters: {', '.join(info.params) or 'none'}.")
                for info in queries])


@click.command("sql", cls=_SqlCommand)
@click.argument("text", metavar="[QUERY]", required=False)
@click.option("--query", "query_name", type=click.Choice(query_names()), metavar="NAME",
              help="Run the documented query NAME (the same as giving NAME as QUERY).")
@click.option("--param", "-p", "pairs", multiple=True, metavar="NAME=VALUE",
              help="Fill %(NAME)s in the query; repeatable. A value of ASCII digits only is "
                   "passed as a number (LIMIT), anything else as a string.")
@click.option("--format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="table",
              show_default=True,
              help="table: aligned columns; csv: RFC 4180 with a header line; json: JSON lines, "
                   "one object per row. CSV and JSON: money as exact decimal strings, times "
                   "ISO-8601 UTC with Z, never a float.")
def sql_command(text: str | None, query_name: str | None, pairs: tuple[str, ...],
                output_format: str) -> None:
    """Run a documented query (QUERY is its name) or SQL (QUERY is a SELECT) on ClickHouse.

    Every %(NAME)s in the query needs -p NAME=VALUE, and every -p must be used. The SQL must not
    end with a FORMAT clause: choose the output with --format. Exit 2 on a usage error (a
    missing or unknown parameter), 1 when ClickHouse refuses the query.
    """
    sql, what = _sql_text(text, query_name)
    params = _params(pairs)
    _check_params(sql, params, what)
    settings = load_settings()
    with _query_errors(settings), _writer(settings) as writer:
        names, rows = writer.query_with_names(sql, params or None)
    _print_result(names, rows, output_format)


INVOICE_SECTIONS = (
    ("Usage charged to the month (per product)", "invoice_lines"),
    ("Quantities (per product and meter)", "invoice_quantities"),
    ("Credits and payments applied during the month", "invoice_credits"),
    ("Invoice (as of today, UTC)", "invoice_status"),
    ("Payments on the invoice (which payment or credit purchase paid how much)",
     "invoice_settlements"),
)


@click.command("invoice")
@click.argument("account_id")
@click.argument("period", callback=_period)
@click.option("--exact", is_flag=True,
              help="Money as stored, to the micro-dollar (6 decimals), instead of dollars "
                   "rounded to the cent.")
def invoice_command(account_id: str, period: str, exact: bool) -> None:
    """Print an account's month: usage per product with cost, credits applied, the invoice
    (status, amount, paid, unpaid, due date, days overdue) and the payments on it.

    Money is shown in dollars rounded to the cent (half to even; display only, the stored
    values are exact) unless --exact; the usage total is summed from the exact costs. Exit 1
    for an account ClickHouse has no rows for; a known account with nothing in the month is
    said so, exit 0.
    """
    params = {"account_id": account_id, "period": period}
    settings = load_settings()
    with _query_errors(settings), _writer(settings) as writer:
        sections = [(title, *writer.query_with_names(load_query(name), params))
                    for title, name in INVOICE_SECTIONS]
        known = any(rows for _, _, rows in sections) or bool(
            writer.query(load_query("account_activity"), {"account_id": account_id}))
    if not known:
        raise click.ClickException(f"no such account: {account_id}")
    click.echo(f"Account {account_id}, {period}\n")
    if not any(rows for _, _, rows in sections):
        click.echo(f"Nothing in {period}: no usage charged, no credits or payments applied, "
                   "no invoice.")
        return
    cell = format_value if exact else format_money_value
    for title, names, rows in sections:
        body = format_table(names, rows, cell) if rows else "none"
        click.echo(f"{title}\n{body}\n")
    _, line_names, lines = sections[0]
    usage_total = exact_sum(line[line_names.index("cost")] for line in lines)
    click.echo(f"Usage total: {cell(usage_total)}")


@click.command("reconcile")
@click.option("--snapshots", "snapshots_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Final snapshots from `billing replay --snapshots-out` or `billing "
                   "snapshots --out`. Default: the live ledger's, read from the account-status "
                   "topic (as `billing snapshots` reads them).")
@click.option("--events", "events_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output events from `billing replay --events-out`: invoices, credits "
                   "purchased, invoice payments and free credit per account.")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr while the status topic is read (default: on when stderr "
                   "is a terminal).")
def reconcile_command(snapshots_file: Path | None, events_file: Path | None,
                      progress: bool | None) -> None:
    """Compare ClickHouse with the ledger's snapshots, money per account (spend, credits
    purchased, invoice payments, invoices, balances); exit 1 on any difference.

    Without --snapshots it reconciles the live ledger: run it when the sink's lag is 0."""
    settings = load_settings()
    events = load_events(events_file) if events_file else None
    if snapshots_file is not None:
        snapshots = load_snapshots(snapshots_file)
    else:
        show = os.isatty(2) if progress is None else progress
        try:
            snapshots = read_snapshots(settings, on_progress=(
                (lambda status: click.echo(str(status), err=True)) if show else None))
        except StatusTopicError as error:
            raise click.ClickException(str(error)) from None
    with _writer(settings) as writer:
        report = reconcile(writer, snapshots, events=events)
    for difference in report.differences:
        click.echo(str(difference))
    verdict = "OK" if report.ok else f"{len(report.differences)} difference(s)"
    click.echo(f"reconciled {report.accounts} accounts, {report.invoices} invoices: {verdict}")
    sys.exit(0 if report.ok else 1)
