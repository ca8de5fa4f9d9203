"""``billing worker``: run the Faust ledger worker against the configured Kafka."""

from __future__ import annotations

import os

import click

from billing.config import load_config
from billing.config_files import ConfigError
from billing.ledger import Ledger
from billing.metrics import metrics_endpoint, metrics_options, new_registry
from billing.pricebook import load_pricebook
from billing.settings import SettingsError, load_settings
from streams.metrics import WorkerMetrics
from streams.worker import LedgerWorker, WorkerOptions

METRICS_PORT_VARIABLE = "BILLING_WORKER_METRICS_PORT"


@click.command("worker")
@click.option("--pricebook", "pricebook_path", envvar="BILLING_PRICEBOOK", default=None,
              help="Price book file (JSON or YAML); default: the shipped one.")
@click.option("--config", "config_path", envvar="BILLING_CONFIG", default=None,
              help="Billing configuration file (JSON or YAML); default: the rules' defaults.")
@click.option("--store", envvar="BILLING_TABLE_STORE", default="rocksdb://",
              type=click.Choice(["rocksdb://", "memory://"]), show_default=True,
              help="Table store; memory:// recovers everything from the changelog at start.")
@click.option("--guarantee", envvar="BILLING_PROCESSING_GUARANTEE", default="at_least_once",
              type=click.Choice(["at_least_once", "exactly_once"]), show_default=True)
@click.option("--session-timeout", envvar="BILLING_SESSION_TIMEOUT", default=30.0,
              show_default=True, help="Consumer group session timeout (s); lower in tests.")
@click.option("--web-port", envvar="BILLING_WORKER_WEB_PORT", default=None, type=int,
              help="Serve Faust's web/metrics endpoint on 127.0.0.1:PORT.")
@click.option("--stuck-seconds", envvar="BILLING_STUCK_SECONDS", default=120.0,
              show_default=True, type=click.FloatRange(min=1.0),
              help="Exit with status 75 (for the supervisor to restart the worker) when it made "
                   "no progress for this long: a delivery unconfirmed by Kafka, or input waiting "
                   "while nothing arrives.")
@click.option("--app-id", envvar="BILLING_APP_ID", default="billing-ledger", show_default=True,
              help="Faust app id: the consumer group and the prefix of the changelog topics.")
@click.option("--loglevel", default="warning", show_default=True)
@metrics_options(METRICS_PORT_VARIABLE)
def worker_command(pricebook_path: str | None, config_path: str | None, store: str,
                   guarantee: str, session_timeout: float, web_port: int | None,
                   stuck_seconds: float, app_id: str, loglevel: str, metrics_host: str,
                   metrics_port: int) -> None:
    """Run the ledger worker: input topics -> ledger -> billing.account-state."""
    try:
        settings = load_settings()
        ledger = Ledger(load_config(config_path), load_pricebook(pricebook_path))
    except (ConfigError, SettingsError) as error:
        raise click.ClickException(str(error)) from None
    options = WorkerOptions(app_id=app_id, store=store, processing_guarantee=guarantee,
                            session_timeout=session_timeout, web_port=web_port,
                            stuck_seconds=stuck_seconds,
                            worker_name=f"{os.uname().nodename}:{os.getpid()}")
    registry = new_registry()
    metrics = WorkerMetrics(settings.topics.inputs, registry)
    worker = LedgerWorker(settings, ledger, options, metrics)
    from faust import Worker

    try:
        with metrics_endpoint(registry, metrics_host, metrics_port, METRICS_PORT_VARIABLE):
            Worker(worker.app, loglevel=loglevel, quiet=True).execute_from_commandline()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
