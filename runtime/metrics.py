"""Prometheus endpoints: each process (worker, sink) serves its own registry at ``/metrics``.

What is shared by the worker and the sink lives here: the registry with the process metrics
(CPU, memory, open files, GC), the per-partition consumer-lag gauge, the ``--metrics-port`` /
``--metrics-host`` options and the HTTP endpoint. The metrics themselves belong to their
components (:mod:`streams.metrics`, :mod:`sinks.metrics`); ``docs/metrics.md`` lists them all.

Each process gets a registry of its own rather than prometheus_client's global one, so that tests
(and the demo) can run several sinks or workers in one process without name clashes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from runtime.logfmt import log_event
from runtime.settings import SettingsError

log = logging.getLogger("runtime.metrics")

DEFAULT_HOST = "127.0.0.1"  # loopback: a scrape from elsewhere needs --metrics-host on purpose
HOST_VARIABLE = "BILLING_METRICS_HOST"

# (topic, partition) -> messages behind; kafka's TopicPartition and Faust's TP unpack the same way.
LagSource = Callable[[], Mapping[tuple[str, int], int]]
Command = TypeVar("Command", bound=Callable[..., Any])


def new_registry() -> CollectorRegistry:
    """A registry holding the process metrics (``process_*``, ``python_*``) and nothing else.

    Also switches off prometheus_client's ``*_created`` series (process-wide: the library has no
    other way): in the text format each would be a second series per counter and label value,
    and no dashboard or alert here reads them.
    """
    disable_created_metrics()
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class PartitionLagCollector:
    """A ``{topic, partition}`` gauge whose values come from ``source`` at each scrape.

    The source runs in the HTTP server's thread, so it must only read (copy) state that its
    owner's thread keeps up to date. If it fails (a partition revoked mid-read), the scrape
    still answers, without lag samples, and the failure is logged.
    """

    def __init__(self, name: str, documentation: str, source: LagSource | None = None) -> None:
        self.name, self.documentation, self.source = name, documentation, source

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["topic", "partition"])
        try:
            lags = dict(self.source()) if self.source is not None else {}
        except Exception as error:  # a broken source must not break the scrape
            log_event(log, "metrics.lag_unavailable", logging.WARNING, metric=self.name,
                      error=f"{type(error).__name__}: {error}")
            lags = {}
        for (topic, partition), lag in sorted(lags.items()):
            family.add_metric([topic, str(partition)], lag)
        yield family


class PortNumber(click.ParamType):
    """A TCP port, 0 meaning "no endpoint"; a bad value's error names the variable it came from."""

    name = "port"

    def __init__(self, variable: str) -> None:
        self.variable = variable

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            self.fail(f"{value!r} (from the option or {self.variable}) is not a port number "
                      "0-65535 (0: no metrics endpoint)", param, ctx)
        return port


def metrics_options(port_variable: str) -> Callable[[Command], Command]:
    """``--metrics-port`` (env ``port_variable``, default 0: off) and ``--metrics-host`` (env
    ``BILLING_METRICS_HOST``, default loopback). The port variable is per command so that a
    worker and a sink started from one shell environment do not ask for the same port."""

    def decorate(command: Command) -> Command:
        command = click.option(
            "--metrics-host", envvar=HOST_VARIABLE, default=DEFAULT_HOST, show_default=True,
            help=f"Address the metrics endpoint binds to [env {HOST_VARIABLE}].")(command)
        return click.option(
            "--metrics-port", envvar=port_variable, default=0, type=PortNumber(port_variable),
            help=f"Serve Prometheus metrics on http://HOST:PORT/metrics; 0: off "
                 f"[env {port_variable}].")(command)

    return decorate


@contextmanager
def metrics_endpoint(registry: CollectorRegistry, host: str, port: int,
                     port_variable: str) -> Iterator[str | None]:
    """Serve ``registry`` at ``http://host:port/metrics`` (from a daemon thread) while the block
    runs; yields the URL, or None when ``port`` is 0. A port in use or a host that does not
    resolve fails at once with :class:`SettingsError` naming both variables."""
    if not port:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise SettingsError(f"cannot serve metrics on {host}:{port} ({HOST_VARIABLE}, "
                            f"{port_variable}): {error.strerror or error}") from None
    url = f"http://{host}:{port}/metrics"
    log_event(log, "metrics.serving", url=url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
