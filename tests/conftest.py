"""Session fixtures: a private Kafka + ClickHouse stack for the integration tests.

The test stack has its own data dir (under pytest's tmp dir) and its own ports, so it never touches
a developer's ``billing stack up`` (``var/``, ports 19092/19093/19000/18123) nor another session's
stack; the Maven jar cache is shared with ``var/`` so the broker jars are downloaded once.

- ``stack_env``: the ``BILLING_*`` variables of the test stack, e.g. for a ``billing worker``
  subprocess: ``subprocess.run([...], env={**os.environ, **stack_env})``.
- ``stack``: starts the stack (Kafka, ClickHouse server, topics) once per session, yields its
  :class:`~runtime.settings.Settings`, and stops it at the end.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import pytest

from devkit.stack.lifecycle import start_stack, stop_stack
from devkit.stack.process import port_in_use
from runtime.logs import RepeatFilter
from runtime.settings import REPO_ROOT, Settings, load_settings

# Tried first (easy to recognise in `ss -ltnp`); any taken one makes all four random instead.
PREFERRED_PORTS = (29092, 29093, 29000, 28123)
# Below Linux's ephemeral range (32768+), so a client's outgoing connection cannot grab a port
# while the broker is down for a restart test.
RANDOM_PORT_RANGE = (20000, 32000)


def _stack_ports() -> tuple[int, ...]:
    if not any(port_in_use(port) for port in PREFERRED_PORTS):
        return PREFERRED_PORTS
    free = (p for p in random.sample(range(*RANDOM_PORT_RANGE), 200) if not port_in_use(p))
    return tuple(next(free) for _ in PREFERRED_PORTS)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test stack's settings as ``BILLING_*`` variables (only these, nothing inherited)."""
    kafka, controller, clickhouse_tcp, clickhouse_http = _stack_ports()
    return {
        "BILLING_DATA_DIR": str(tmp_path_factory.mktemp("stack")),
        "BILLING_CACHE_DIR": str(REPO_ROOT / "var"),
        "BILLING_KAFKA_PORT": str(kafka),
        "BILLING_KAFKA_CONTROLLER_PORT": str(controller),
        "BILLING_CLICKHOUSE_PORT": str(clickhouse_tcp),
        "BILLING_CLICKHOUSE_HTTP_PORT": str(clickhouse_http),
        "BILLING_CLICKHOUSE_URL": f"clickhouse://127.0.0.1:{clickhouse_tcp}/billing",
    }


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[Settings]:
    """Kafka + ClickHouse server + the project's topics, running for the whole session."""
    settings = load_settings(stack_env)
    try:
        start_stack(settings)
        yield settings
    finally:
        stop_stack(settings)


@pytest.fixture(autouse=True)
def no_repeat_filter_left_behind() -> Iterator[None]:
    """A command run in-process (CliRunner) installs the repeated-line filter on the root
    logger's handlers, pytest's log capture among them: take it off again after each test, or
    later tests would not see the repeated lines they check."""
    yield
    for handler in logging.getLogger().handlers:
        for existing in [item for item in handler.filters if isinstance(item, RepeatFilter)]:
            handler.removeFilter(existing)
