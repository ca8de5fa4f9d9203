"""The worker's start-up checks that need no broker (``streams/preflight.py``); the ones against
the real broker are in ``tests/integration/test_preflight.py``."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from billing.ledger import Ledger
from commands.cli import main
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import SettingsError, load_settings, settings_variables, unknown_variables
from streams.preflight import (
    DEFAULT_SESSION_BOUNDS_MS,
    FAUST_REQUEST_TIMEOUT,
    SessionBounds,
    check_session_timeout,
    check_timestamp_type,
    heartbeat_interval,
    known_variables,
)
from streams.worker import LedgerWorker, WorkerOptions

BROKER = SessionBounds(6_000, 1_800_000, "broker 1")


# -- unknown variables ------------------------------------------------------------------------

def test_a_misspelt_variable_gets_did_you_mean() -> None:
    warnings = unknown_variables({"BILLING_PARTITONS": "12", "BILLING_PARTITIONS": "4",
                                  "PATH": "/bin"}, settings_variables())
    assert warnings == ["BILLING_PARTITONS is set, but no setting has that name: it is ignored; "
                        "did you mean BILLING_PARTITIONS?"]


def test_an_unknown_variable_far_from_every_name_gets_no_suggestion() -> None:
    assert unknown_variables({"BILLING_XYZZY": "1"}, settings_variables()) == [
        "BILLING_XYZZY is set, but no setting has that name: it is ignored"]


def test_the_known_names_come_from_the_code_that_reads_them() -> None:
    known = known_variables(main)
    # settings.py (recorded while load_settings runs), click options of every command, the
    # dashboard's token.
    assert {"BILLING_PARTITIONS", "BILLING_KAFKA_SASL_PASSWORD", "BILLING_TOPIC_ACCOUNT_STATUS",
            "BILLING_SESSION_TIMEOUT", "BILLING_APP_ID", "BILLING_SINK_METRICS_PORT",
            "BILLING_WORKER_METRICS_PORT", "BILLING_METRICS_HOST", "BILLING_PRICEBOOK",
            "BILLING_DASHBOARD_TOKEN"} <= known
    assert all(name.startswith("BILLING_") for name in known)
    assert not unknown_variables(dict.fromkeys(known, "x"), known)


def test_every_variable_the_docs_name_is_known() -> None:
    """A name in the docs the code does not read is a documented typo (or a stale name)."""
    import re

    from runtime.settings import REPO_ROOT

    documented = set()
    for doc in ("README.md", "docs/operations.md", "docs/contracts.md", "docs/metrics.md"):
        documented |= set(re.findall(r"\bBILLING_[A-Z0-9_]*[A-Z0-9]\b",
                                     (REPO_ROOT / doc).read_text()))
    patterns = {"BILLING_TOPIC_", "BILLING_KAFKA_"}  # prose about a family of variables
    typo = {"BILLING_PARTITONS"}  # the example of the unknown-variable warning
    assert documented - known_variables(main) - patterns - typo == set()


def test_the_worker_warns_about_a_misspelt_variable_before_it_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["worker", "--session-timeout", "0"], env={
        "BILLING_PARTITONS": "12", "BILLING_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert ("billing worker: warning: BILLING_PARTITONS is set, but no setting has that name: "
            "it is ignored; did you mean BILLING_PARTITIONS?") in result.output


# -- session timeout ----------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [6.0, 10.0, 30.0, 90.0])
def test_session_timeouts_within_the_bounds_pass(seconds: float) -> None:
    check_session_timeout(seconds, heartbeat_interval(seconds), BROKER)


def test_a_session_timeout_below_the_broker_minimum_is_refused() -> None:
    with pytest.raises(SettingsError) as refused:
        check_session_timeout(1.0, heartbeat_interval(1.0), BROKER)
    assert str(refused.value) == (
        "BILLING_SESSION_TIMEOUT (--session-timeout)=1 s (1000 ms) is outside the broker's "
        "group.min.session.timeout.ms=6000 .. group.max.session.timeout.ms=1800000 (broker 1): "
        "the broker would refuse the worker's group membership. Set it between 6 and 90 "
        "seconds (default 30), or change the broker's bounds.")


def test_a_session_timeout_above_a_lowered_broker_maximum_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"group\.max\.session\.timeout\.ms=20000 "
                                            r"\(broker 1\).*between 6 and 20 seconds"):
        check_session_timeout(30.0, 3.0, SessionBounds(6_000, 20_000, "broker 1"))


@pytest.mark.parametrize(("seconds", "message"), [
    (0.0, "must be positive"),
    (-5.0, "must be positive"),
    (120.0, "more than Faust's request timeout"),
])
def test_session_timeouts_faust_cannot_use_are_refused(seconds: float, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        check_session_timeout(seconds, 3.0, BROKER)


def test_a_heartbeat_longer_than_a_third_of_the_session_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"heartbeat interval \(4 s\).*a third"):
        check_session_timeout(10.0, 4.0, BROKER)


def test_kafka_default_bounds() -> None:
    assert DEFAULT_SESSION_BOUNDS_MS == (6_000, 1_800_000)


@pytest.mark.parametrize("seconds", [6.0, 10.0, 30.0])
def test_the_checked_timeouts_are_the_ones_the_worker_gives_faust(seconds: float,
                                                                  tmp_path: Path) -> None:
    settings = load_settings({"BILLING_DATA_DIR": str(tmp_path)})
    worker = LedgerWorker(settings, Ledger(load_config(None), load_pricebook(None)),
                          WorkerOptions(store="memory://", session_timeout=seconds))
    conf = worker.app.conf
    assert conf.broker_session_timeout == seconds
    assert conf.broker_heartbeat_interval == heartbeat_interval(seconds)
    assert conf.broker_request_timeout == FAUST_REQUEST_TIMEOUT


def test_the_worker_refuses_a_zero_session_timeout_before_connecting(tmp_path: Path) -> None:
    # Kafka at a closed port: the local check comes first, so this ends at once.
    result = CliRunner().invoke(main, ["worker"], env={
        "BILLING_SESSION_TIMEOUT": "0", "BILLING_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "BILLING_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "Error: BILLING_SESSION_TIMEOUT (--session-timeout)=0 s must be positive" in (
        result.output)


# -- timestamp type -----------------------------------------------------------------------------

def test_create_time_is_refused_with_the_fix() -> None:
    settings = load_settings({"BILLING_KAFKA_BOOTSTRAP": "kafka-1:9092"})
    configs = {topic: {"message.timestamp.type": "LogAppendTime"}
               for topic in settings.topics.inputs}
    configs["billing.usage"] = {"message.timestamp.type": "CreateTime"}
    with pytest.raises(SettingsError) as refused:
        check_timestamp_type(settings, configs)
    message = str(refused.value)
    assert message.startswith("billing.usage (BILLING_TOPIC_USAGE) uses "
                              "message.timestamp.type=CreateTime: the input topics must use "
                              "message.timestamp.type=LogAppendTime")
    assert ("kafka-configs.sh --bootstrap-server kafka-1:9092 --alter --entity-type topics "
            "--entity-name billing.usage --add-config message.timestamp.type=LogAppendTime"
            ) in message
    assert "provider's console or Terraform" in message
    assert "billing.payments" not in message


def test_an_unreadable_timestamp_type_names_the_missing_acl() -> None:
    settings = load_settings({})
    configs = {topic: {"message.timestamp.type": "LogAppendTime"}
               for topic in settings.topics.inputs}
    configs["billing.control"] = {}
    with pytest.raises(SettingsError, match=r"billing\.control.*DESCRIBE_CONFIGS"):
        check_timestamp_type(settings, configs)


def test_known_variables_walks_nested_groups() -> None:
    @click.group()
    def root() -> None: ...

    @root.group()
    def sub() -> None: ...

    @sub.command()
    @click.option("--x", envvar=["BILLING_X_ONE", "BILLING_X_TWO"])
    def leaf(x: str) -> None: ...

    assert {"BILLING_X_ONE", "BILLING_X_TWO"} <= known_variables(root)
