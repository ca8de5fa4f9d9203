"""The worker refuses, at start, what the real broker says is wrong; ``billing stack topics``
creates (and fixes) the topics so that it does not.

Against the session's stack (tests/conftest.py). Tests that need other topics create them under
their own names (``BILLING_TOPIC_*``), so the default topics other tests use are not touched.
Each refusal runs ``billing worker`` (in this process: it ends before Faust would start) and
checks exit status 2 and the message.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from commands.cli import main
from devkit.stack.clickhouse import ClickHouseServer
from devkit.stack.kafka import KafkaServer
from runtime.settings import Settings, load_settings
from runtime.topics import admin_client, describe_topic_configs
from streams.preflight import preflight

pytestmark = pytest.mark.integration

INPUTS = ("USAGE", "PAYMENTS", "ACCOUNTS", "CONTROL")
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}


def _inputs_named(prefix: str) -> dict[str, str]:
    return {f"BILLING_TOPIC_{kind}": f"{prefix}.{kind.lower()}" for kind in INPUTS}


def _create(settings: Settings, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
    """topic -> (partitions, configs), created by hand as another tool would."""
    with admin_client(settings) as admin:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                    "configs": configs}
                             for name, (partitions, configs) in topics.items()},
                            wait_for_metadata=True)


def _worker(stack_env: dict[str, str], **env: str | None) -> Result:
    return CliRunner().invoke(main, ["worker"], env={**stack_env, "BILLING_PARTITIONS": "4",
                                                     **env})


def _refused(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # click wraps nothing, but be safe


def test_stack_topics_creates_inputs_with_log_append_time_and_a_compacted_status_topic(
        stack: Settings, stack_env: dict[str, str]) -> None:
    names = {**_inputs_named("preflight-new"),
             "BILLING_TOPIC_ACCOUNT_STATUS": "preflight-new.account-status"}
    result = CliRunner().invoke(main, ["stack", "topics"], env={**stack_env, **names})
    assert result.exit_code == 0, result.output
    assert "created preflight-new.usage" in result.output
    settings = load_settings({**stack_env, **names})
    configs = describe_topic_configs(settings, settings.topics.all)
    for topic in settings.topics.inputs:
        assert configs[topic]["message.timestamp.type"] == "LogAppendTime", topic
        assert configs[topic]["cleanup.policy"] == "delete", topic
    status = configs["preflight-new.account-status"]
    assert status["cleanup.policy"] == "compact"
    assert status["message.timestamp.type"] == "CreateTime"  # an output: the worker's time
    for output in (settings.topics.account_state, settings.topics.dead_letter):
        assert configs[output]["cleanup.policy"] == "delete"
    # The session's own topics were made by start_stack the same way.
    session = describe_topic_configs(stack, [stack.topics.usage, stack.topics.account_status])
    assert session[stack.topics.usage]["message.timestamp.type"] == "LogAppendTime"
    assert session[stack.topics.account_status]["cleanup.policy"] == "compact"


def test_create_time_is_refused_then_fixed_by_stack_topics(stack: Settings,
                                                           stack_env: dict[str, str]) -> None:
    names = _inputs_named("preflight-ct")
    _create(stack, {name: (4, {} if kind == "BILLING_TOPIC_USAGE" else LOG_APPEND)
                    for kind, name in names.items()})

    message = _refused(_worker(stack_env, **names))
    assert ("Error: preflight-ct.usage (BILLING_TOPIC_USAGE) uses "
            "message.timestamp.type=CreateTime: the input topics must use "
            "message.timestamp.type=LogAppendTime") in message
    assert (f"kafka-configs.sh --bootstrap-server {stack.kafka_bootstrap} --alter --entity-type "
            "topics --entity-name preflight-ct.usage --add-config "
            "message.timestamp.type=LogAppendTime") in message
    assert "preflight-ct.payments" not in message

    fixed = CliRunner().invoke(main, ["stack", "topics"], env={**stack_env, **names})
    assert fixed.exit_code == 0, fixed.output
    settings = load_settings({**stack_env, **names})
    configs = describe_topic_configs(settings, [names["BILLING_TOPIC_USAGE"]])
    assert configs[names["BILLING_TOPIC_USAGE"]]["message.timestamp.type"] == "LogAppendTime"
    assert preflight(settings, 10.0, {**stack_env, **names}).partitions == 4


def test_partitions_that_disagree_with_the_topics_are_refused(stack_env: dict[str, str]) -> None:
    message = _refused(_worker(stack_env, BILLING_PARTITIONS="7"))
    assert ("Error: BILLING_PARTITIONS=7, but the input topics (billing.usage, billing.payments, "
            "billing.accounts, billing.control) have 4 partitions: set BILLING_PARTITIONS=4, or "
            "unset it (the worker then takes the count from the topics).") in message


def test_without_partitions_set_the_count_is_taken_from_the_topics(
        stack: Settings, stack_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    names = _inputs_named("preflight-6p")
    _create(stack, {name: (6, LOG_APPEND) for name in names.values()})
    env = {**stack_env, **names}  # no BILLING_PARTITIONS: the default, 4
    settings = load_settings(env)
    assert settings.partitions == 4
    assert preflight(settings, 10.0, env).partitions == 6
    assert "BILLING_PARTITIONS is not set: using the input topics' 6 partitions" in (
        capsys.readouterr().err)


def test_inputs_that_are_not_co_partitioned_are_refused(stack: Settings,
                                                        stack_env: dict[str, str]) -> None:
    names = _inputs_named("preflight-mixed")
    _create(stack, {name: (2 if kind == "BILLING_TOPIC_CONTROL" else 4, LOG_APPEND)
                    for kind, name in names.items()})
    message = _refused(_worker(stack_env, **names))
    assert ("Error: The input topics are not co-partitioned (preflight-mixed.usage has 4, "
            "preflight-mixed.payments has 4, preflight-mixed.accounts has 4, "
            "preflight-mixed.control has 2 partitions)") in message


def test_a_missing_input_topic_is_refused(stack: Settings, stack_env: dict[str, str]) -> None:
    message = _refused(_worker(stack_env, BILLING_TOPIC_PAYMENTS="preflight-missing.payments"))
    assert ("Error: Input topic(s) preflight-missing.payments (BILLING_TOPIC_PAYMENTS) do not "
            f"exist on {stack.kafka_bootstrap}: create them with `billing stack topics`") in message


def test_a_session_timeout_below_the_brokers_minimum_is_refused(stack: Settings,
                                                                stack_env: dict[str, str]) -> None:
    """Before this check: one error line, then a worker that idled for ever."""
    message = _refused(_worker(stack_env, BILLING_SESSION_TIMEOUT="1"))
    assert ("Error: BILLING_SESSION_TIMEOUT (--session-timeout)=1 s (1000 ms) is outside the "
            "broker's group.min.session.timeout.ms=6000 .. group.max.session.timeout.ms=1800000 "
            "(broker 1): the broker would refuse the worker's group membership. Set it between 6 "
            "and 90 seconds") in message


def test_the_real_command_exits_2_with_a_misspelt_variable_warned(
        stack: Settings, stack_env: dict[str, str]) -> None:
    """As a supervisor sees it: a child process, its exit status and stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "commands.cli", "worker"],
        env={"PATH": "/usr/bin:/bin", **stack_env, "BILLING_PARTITIONS": "7",
             "BILLING_SESION_TIMEOUT": "10"},
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert ("billing worker: warning: BILLING_SESION_TIMEOUT is set, but no setting has that "
            "name: it is ignored; did you mean BILLING_SESSION_TIMEOUT?") in result.stderr
    assert "Error: BILLING_PARTITIONS=7, but the input topics" in result.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_stack_data_directories_are_private(stack: Settings) -> None:
    for path in (KafkaServer(stack).home, KafkaServer(stack).log_dirs,
                 ClickHouseServer(stack).home, ClickHouseServer(stack).home / "data",
                 stack.data_dir / "faust"):
        assert _mode(path) == 0o700, path
