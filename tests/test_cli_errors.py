"""A bad ``BILLING_*`` value or configuration file ends any ``billing`` command with its message
and exit status 2, never a traceback (``commands.cli.BillingGroup``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from billing.config import ConfigError
from commands.cli import BillingGroup, main


@pytest.mark.parametrize("args", [
    ["sink", "migrate"],
    ["sink", "migrate", "--cluster", "main"],
    ["deadletter", "list"],
    ["deadletter", "redrive", "--all", "--dry-run"],
    ["produce", "--type", "usage", "--account", "acct-1", "--product", "deepseek-v3"],
    ["export", "--out", "{tmp}/never-written.jsonl"],
    ["sql", "SELECT 1"],
    ["invoice", "acct-1", "2026-01"],
])
def test_a_bad_setting_exits_2_with_the_variable_named(args: list[str], tmp_path: Path) -> None:
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = CliRunner().invoke(main, args, env={"BILLING_PARTITIONS": "twelve"})
    assert result.exit_code == 2, result.output
    assert "Error: BILLING_PARTITIONS='twelve' is not a whole number" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    assert not (tmp_path / "never-written.jsonl").exists()


def test_a_bad_configuration_file_is_handled_the_same_way() -> None:
    group = BillingGroup()

    @group.command()
    def broken() -> None:
        raise ConfigError("pricebook.yaml: product 'x' needs a mapping of meter -> price")

    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == 2
    assert result.output == ("Error: pricebook.yaml: product 'x' needs a mapping of meter -> "
                             "price\n")


def test_other_errors_are_not_swallowed() -> None:
    group = BillingGroup()

    @group.command()
    def failing() -> None:
        raise RuntimeError("a bug")

    result = CliRunner().invoke(group, ["failing"])
    assert isinstance(result.exception, RuntimeError)  # a bug keeps its traceback


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_a_bad_standby_replicas_value_is_refused_with_the_fix(value: str, tmp_path: Path) -> None:
    """Refused while the options are read, before anything connects (Kafka at a closed port)."""
    env = {"BILLING_KAFKA_BOOTSTRAP": "127.0.0.1:9", "BILLING_DATA_DIR": str(tmp_path)}
    for how in ({"env": {**env, "BILLING_STANDBY_REPLICAS": value}, "args": ["worker"]},
                {"env": env, "args": ["worker", "--standby-replicas", value]}):
        result = CliRunner().invoke(main, how["args"], env=how["env"])
        assert result.exit_code == 2, result.output
        assert (f"Error: BILLING_STANDBY_REPLICAS (--standby-replicas)={value!r} must be a whole "
                "number >= 0: how many other workers keep a copy of each table partition (0, the "
                "default, for none; 1 for a fast takeover when a worker stops)\n") in result.output
