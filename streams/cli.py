"""``billing worker``: run the Faust ledger worker against the configured Kafka.

Before the Faust app starts, :func:`streams.preflight.preflight` checks the settings against the
broker. A refused setting raises :class:`~runtime.settings.SettingsError`, which the ``billing``
group ends with its message and exit status 2, like any other bad setting; a broker that does
not answer ends the command with status 75 (try again, as for a stuck worker).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from billing.ledger import Ledger
from runtime.logs import install_repeat_filter
from runtime.metrics import metrics_endpoint, metrics_options, new_registry
from runtime.rules_files import load_rules, rules_options
from runtime.settings import SettingsError, load_settings
from runtime.web_auth import load_token
from streams.gc_tuning import tune_garbage_collector
from streams.intake import EXIT_STUCK
from streams.metrics import WorkerMetrics
from streams.preflight import BrokerUnavailable, preflight, unknown_variable_warnings
from streams.web import TOKEN_VARIABLE as WEB_TOKEN_VARIABLE
from streams.worker import LedgerWorker, WorkerOptions

METRICS_PORT_VARIABLE = "BILLING_WORKER_METRICS_PORT"
STANDBY_SETTING = "BILLING_STANDBY_REPLICAS (--standby-replicas)"


class BrokerUnavailableError(click.ClickException):
    """Kafka did not answer the start-up checks: exit 75, for the supervisor to try again."""

    exit_code = EXIT_STUCK


def _worker_class() -> type:
    """Faust's Worker, with :class:`~runtime.logs.RepeatFilter` on the handlers of the root
    logger that Faust configures when it starts (it replaces any configured before), and without
    its terminal spinner. Named ``Worker`` like Faust's: its name is the label of Faust's log
    lines."""
    import faust

    class Worker(faust.Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # At --loglevel warning (the default) Faust's spinner sets the root logger to DEBUG
            # so that every record turns it: every debug call of Faust, mode and aiokafka then
            # built a record (a fifth of an idle worker's CPU; at 1,000 usage/s 1.3x the CPU per
            # event, measured), and it wrote terminal codes into the log.
            self.spinner = None

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            install_repeat_filter(logger)

    return Worker


def standby_replicas(_ctx: click.Context, _param: click.Parameter, raw: str) -> int:
    """The number of standby copies: a whole number >= 0, refused with the fix otherwise (click's
    own message would name neither the variable nor what the value means)."""
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingsError(
            f"{STANDBY_SETTING}={raw!r} must be a whole number >= 0: how many other workers keep "
            "a copy of each table partition (0, the default, for none; 1 for a fast takeover "
            "when a worker stops)")
    return value


@click.command("worker")
@rules_options
@click.option("--store", envvar="BILLING_TABLE_STORE", default="rocksdb://",
              type=click.Choice(["rocksdb://", "memory://"]), show_default=True,
              help="Table store; memory:// recovers everything from the changelog at start.")
@click.option("--guarantee", envvar="BILLING_PROCESSING_GUARANTEE", default="at_least_once",
              type=click.Choice(["at_least_once", "exactly_once"]), show_default=True)
@click.option("--session-timeout", envvar="BILLING_SESSION_TIMEOUT", default=30.0,
              show_default=True, help="Consumer group session timeout (s); lower in tests.")
@click.option("--web-port", envvar="BILLING_WORKER_WEB_PORT", default=None, type=int,
              help="Serve the account pages (/accounts/ID, /accounts/ID/may-send) and Faust's "
                   "web endpoints on HOST:PORT.")
@click.option("--web-host", envvar="BILLING_WORKER_WEB_HOST", default="127.0.0.1",
              show_default=True,
              help="Where the web server listens; not a loopback address: "
                   f"{WEB_TOKEN_VARIABLE} (16+ characters) is required.")
@click.option("--stuck-seconds", envvar="BILLING_STUCK_SECONDS", default=120.0,
              show_default=True, type=click.FloatRange(min=1.0),
              help="Exit with status 75 (for the supervisor to restart the worker) when it made "
                   "no progress for this long: a delivery unconfirmed by Kafka, or input waiting "
                   "while nothing arrives.")
@click.option("--standby-replicas", envvar="BILLING_STANDBY_REPLICAS", default="0",
              show_default=True, callback=standby_replicas,
              help="Other workers that keep an up-to-date copy of each table partition, so one "
                   "that takes partitions over (a worker stopped or crashed) has their state "
                   "instead of rebuilding it from the changelog; each copy costs its worker the "
                   "reading of the changelog it mirrors. Does nothing with one worker. Off by "
                   "default: see the known issue in streams/README.md.")
@click.option("--bulk-restore/--no-bulk-restore", envvar="BILLING_BULK_RESTORE", default=True,
              show_default=True,
              help="Read the tables' changelogs with a plain consumer in bulk before Faust's "
                   "recovery reads the rest record by record (a new worker of 1,000,000 "
                   "accounts: see BENCHMARKS.md). Off: Faust's own reading only.")
@click.option("--app-id", envvar="BILLING_APP_ID", default="billing-ledger", show_default=True,
              help="Faust app id: the consumer group and the prefix of the changelog topics.")
@click.option("--loglevel", default="warning", show_default=True)
@metrics_options(METRICS_PORT_VARIABLE)
def worker_command(pricebook_path: str | None, config_path: str | None, store: str,
                   guarantee: str, session_timeout: float, web_port: int | None,
                   web_host: str, stuck_seconds: float, standby_replicas: int,
                   bulk_restore: bool, app_id: str, loglevel: str, metrics_host: str,
                   metrics_port: int) -> None:
    """Run the ledger worker: input topics -> ledger -> billing.account-state."""
    # Errors of settings and configuration files end the command with exit status 2
    # (commands.cli.BillingGroup).
    for warning in unknown_variable_warnings(os.environ, click.get_current_context().find_root()
                                             .command):
        click.echo(f"billing worker: warning: {warning}", err=True)
    settings = load_settings()
    ledger = Ledger(*load_rules(settings, config_path, pricebook_path))
    try:
        settings = preflight(settings, session_timeout, os.environ)
    except BrokerUnavailable as error:
        raise BrokerUnavailableError(str(error)) from None
    web_token = None if web_port is None else load_token(
        web_host, os.environ, WEB_TOKEN_VARIABLE, "the worker's web server")
    options = WorkerOptions(app_id=app_id, store=store, processing_guarantee=guarantee,
                            session_timeout=session_timeout, web_port=web_port,
                            web_host=web_host, web_token=web_token,
                            stuck_seconds=stuck_seconds, standby_replicas=standby_replicas,
                            bulk_restore=bulk_restore,
                            worker_name=f"{os.uname().nodename}:{os.getpid()}")
    registry = new_registry()
    metrics = WorkerMetrics(settings.topics.inputs, registry)
    worker = LedgerWorker(settings, ledger, options, metrics)
    tune_garbage_collector()
    with metrics_endpoint(registry, metrics_host, metrics_port, METRICS_PORT_VARIABLE):
        _worker_class()(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
