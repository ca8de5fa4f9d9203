"""ClickHouse with a user and password, on the test's clickhouse-server: the commands log in with
the URL's user and the password from the URL or ``BILLING_CLICKHOUSE_PASSWORD``; and
``billing sink run --group NAME`` loads the topics again, alongside a group that has read them.

The user comes from a ``users.d`` file next to the stack's generated ``users.xml``: the server
merges it and reloads it while running, and the passwordless ``default`` user stays as it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner

from commands.cli import main
from devkit.stack.clickhouse import ClickHouseServer
from runtime.clickhouse import clickhouse_answers, local_target
from runtime.observe import group_lag, wait_until
from runtime.settings import ClickHouseTarget, Secret, Settings, load_settings
from schemas.codec import Codec
from sinks.clickhouse import ClickHouseError, open_writer
from sinks.sink import SinkConfig, build_sink
from tests.integration.pipeline import isolated
from tests.integration.test_sink_kafka import produce, run_until
from tests.test_sink_samples import ledger_run

codec = Codec()  # plain Avro, as the test stacks run without a schema registry

pytestmark = pytest.mark.integration

USER, PASSWORD = "billing_login_test", "p@ss:w/rd %&<"
USERS_FILE = """<?xml version="1.0"?>
<yandex><users><{user}>
    <password>{password}</password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota>
</{user}></users></yandex>
"""


@pytest.fixture(scope="module")
def login(stack: Settings) -> Iterator[ClickHouseTarget]:
    """The user with a password, usable once the server has reloaded its users."""
    users_d = ClickHouseServer(stack).home / "users.d"
    users_d.mkdir(exist_ok=True)
    users_file = users_d / f"{USER}.xml"
    users_file.write_text(USERS_FILE.format(user=USER, password=escape(PASSWORD)))
    target = ClickHouseTarget("127.0.0.1", stack.clickhouse_port, "default", USER,
                              Secret(PASSWORD))
    try:
        wait_until(lambda: clickhouse_answers(target), 60, interval=0.5,
                   what="clickhouse-server to load the users.d file")
        yield target
    finally:
        users_file.unlink()


def url(stack: Settings, database: str, password: str | None = None) -> str:
    secret = f":{quote(password, safe='')}" if password is not None else ""
    return f"clickhouse://{USER}{secret}@127.0.0.1:{stack.clickhouse_port}/{database}"


def test_commands_log_in_with_the_password(stack: Settings, stack_env: dict[str, str],
                                           login: ClickHouseTarget) -> None:
    database = f"login_{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    in_url = runner.invoke(main, ["sink", "migrate"],
                           env={**stack_env, "BILLING_CLICKHOUSE_URL": url(stack, database,
                                                                           PASSWORD)})
    assert in_url.exit_code == 0, in_url.output
    assert "applied 001_rated_usage.sql" in in_url.output.splitlines()
    apart = runner.invoke(main, ["sql", "SELECT count() AS rows FROM rated_usage"],
                          env={**stack_env, "BILLING_CLICKHOUSE_URL": url(stack, database),
                               "BILLING_CLICKHOUSE_PASSWORD": PASSWORD})
    assert apart.exit_code == 0 and apart.output.splitlines()[2].strip() == "0", apart.output

    wrong = runner.invoke(main, ["sql", "SELECT 1"],
                          env={**stack_env, "BILLING_CLICKHOUSE_URL": url(stack, database,
                                                                          "not-it")})
    assert wrong.exit_code == 1, wrong.output
    assert f"Wrong password for user {USER}" in wrong.output
    assert "not-it" not in wrong.output and f"{USER}@127.0.0.1" in wrong.output
    assert clickhouse_answers(local_target(stack))  # the default user did not change


def test_sink_run_in_a_new_group_loads_the_topics_again(stack: Settings, tmp_path: Path,
                                                        login: ClickHouseTarget) -> None:
    settings, _ = isolated(stack, "sinkgroup")
    label = uuid.uuid4().hex[:8]
    topics = (settings.topics.usage_rated, settings.topics.account_state)
    records = ledger_run().rated[:200]
    produce(settings, settings.topics.usage_rated,
            [(r["account_id"], codec.encode("usage_rated", r)) for r in records])

    def stored(database: str) -> bool:
        try:
            with open_writer(replace(settings, clickhouse_url=url(stack, database),
                                     clickhouse_password=login.password)) as writer:
                return writer.query("SELECT count() FROM rated_usage FINAL") == [(200,)]
        except ClickHouseError:  # the sink has not created the tables yet
            return False

    # The running sink, as the default user: its group has read everything.
    old_group = f"old-{label}"
    old = replace(settings, clickhouse_url=(f"clickhouse://127.0.0.1:{stack.clickhouse_port}/"
                                            f"group_old_{label}"))
    with open_writer(old) as writer:
        writer.apply_ddl()
        run_until(build_sink(old, writer, SinkConfig(batch_seconds=0.5), group_id=old_group),
                  lambda: group_lag(settings, old_group, topics) == 0)

    # A second sink in a new group, logged in with the password (child environment), into
    # a fresh database: it starts from the beginning of the topics.
    new_group, new_database, log_path = f"new-{label}", f"group_new_{label}", tmp_path / "log"
    new = load_settings({**settings.to_env(), "BILLING_CLICKHOUSE_URL": url(stack, new_database),
                         "BILLING_CLICKHOUSE_PASSWORD": PASSWORD})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "sink", "run", "--group", new_group,
             "--progress-seconds", "1", "--batch-seconds", "0.5"],
            env={**os.environ, **new.to_env()}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: stored(new_database)
                   and group_lag(settings, new_group, topics) == 0, 120, interval=0.5,
                   what="the new group's sink to load everything")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log_path.read_text()
    assert f"(group {new_group})" in log_path.read_text()
    assert PASSWORD not in log_path.read_text()
    assert group_lag(settings, old_group, topics) == 0
