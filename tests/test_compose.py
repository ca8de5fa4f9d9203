"""docker-compose.yml stays in step with the code, though no Docker engine runs it here.

The compose file configures the app only through ``BILLING_*`` variables, so a variable the code
does not read (a typo, a renamed setting) would be silently ignored in a container: these checks
catch that, and the wiring between services, without starting anything.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from devkit.stack.cli import stack
from runtime.settings import REPO_ROOT, load_settings, settings_variables

COMPOSE = REPO_ROOT / "docker-compose.yml"
# `billing` sub-commands that compose runs. `stack topics` exists here (checked against the click
# group below); `worker` and `sink run` belong to streams/ and sinks/ and are checked by name only.
KNOWN_COMMANDS = {("stack", "topics"), ("worker",), ("sink", "run")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _billing_variables_read_by_settings() -> set[str]:
    return set(settings_variables())  # recorded while load_settings runs


def test_services_are_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "clickhouse", "worker", "sink"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for app in ("worker", "sink", "topics"):
        assert services[app]["build"]["dockerfile"] == "stack/Dockerfile"
        assert (REPO_ROOT / services[app]["build"]["context"] / "stack" / "Dockerfile").is_file()


def test_host_ports_are_loopback_and_match_the_local_stack(compose: dict[str, Any]) -> None:
    defaults = load_settings({})
    published = {
        name: [str(port) for port in service.get("ports", [])]
        for name, service in compose["services"].items()
    }
    assert published["kafka"] == [f"127.0.0.1:{defaults.kafka_port}:{defaults.kafka_port}"]
    assert published["clickhouse"] == [
        f"127.0.0.1:{defaults.clickhouse_port}:9000",
        f"127.0.0.1:{defaults.clickhouse_http_port}:8123",
    ]
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)


def test_every_billing_variable_is_one_the_settings_read(compose: dict[str, Any]) -> None:
    named = set(re.findall(r"\bBILLING_[A-Z0-9_]+", COMPOSE.read_text()))
    assert named, "compose names no BILLING_* variable"
    assert named <= _billing_variables_read_by_settings()


def test_the_topics_service_creates_every_topic_the_settings_name(compose: dict[str, Any]) -> None:
    """`billing stack topics` creates `Topics.all` (the account-status topic included) with the
    partition count of the worker's environment, so the worker's start-up check agrees."""
    env = {key: str(value) for key, value in compose["services"]["topics"]["environment"].items()}
    worker_env = {key: str(value)
                  for key, value in compose["services"]["worker"]["environment"].items()}
    assert env == worker_env
    topics = load_settings(env).topics
    assert topics.account_status == "billing.account-status"
    assert topics.account_status in topics.all and set(topics.inputs) <= set(topics.all)


def test_app_services_get_valid_settings_pointing_at_the_compose_services(
    compose: dict[str, Any],
) -> None:
    for name in ("worker", "sink", "topics"):
        env = {key: str(value) for key, value in compose["services"][name]["environment"].items()}
        settings = load_settings(env)
        assert settings.kafka_bootstrap == "kafka:9092"
        assert settings.clickhouse_url == "clickhouse://clickhouse:9000/billing"
        assert not settings.uses_local_kafka


def test_commands_are_billing_sub_commands(compose: dict[str, Any]) -> None:
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if "command" in service
    }
    assert set(commands) == {"topics", "worker", "sink"}
    for command in commands.values():
        assert command[0] == "billing"
        assert tuple(command[1:]) in KNOWN_COMMANDS
    assert "topics" in stack.commands  # the one that lives in this package


def test_app_services_wait_for_what_they_use(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for app in ("worker", "sink"):
        assert services[app]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["sink"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"


def test_dockerfile_installs_the_packages_the_commands_need() -> None:
    dockerfile = (REPO_ROOT / "stack" / "Dockerfile").read_text()
    for package in ("billing", "streams", "sinks", "schemas"):
        assert f"COPY {package} ./{package}" in dockerfile
        assert (REPO_ROOT / package).is_dir()
