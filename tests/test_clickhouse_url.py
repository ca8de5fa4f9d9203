"""``BILLING_CLICKHOUSE_URL`` with a login and TLS: parsed once, the password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from commands.cli import main
from runtime.clickhouse import clickhouse_client, server_target
from runtime.settings import (
    ClickHouseTarget,
    SettingsError,
    load_settings,
    mask_url,
    parse_clickhouse_url,
    url_without_password,
)
from sinks.clickhouse import DriverWriter, open_writer

SECRET = "p@ss:w/rd"
ENCODED = "p%40ss%3Aw%2Frd"


def test_a_full_url_gives_user_password_tls_and_database(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a connection is made")
    target = parse_clickhouse_url(
        f"clickhouse://ana%40team:{ENCODED}@ch.example/billing?secure=1&ca_certs={ca}")
    assert target == ClickHouseTarget("ch.example", 9440, "billing", "ana@team", SECRET,
                                      secure=True, ca_certs=ca)
    assert SECRET not in repr(target)


@pytest.mark.parametrize(("url", "host", "port", "database", "user", "secure"), [
    ("clickhouse://ch:9000/db", "ch", 9000, "db", "default", False),
    ("clickhouse://ch", "ch", 9000, "default", "default", False),
    ("clickhouse:///db", "127.0.0.1", 9000, "db", "default", False),
    ("clickhouse://u@ch:19440/db?secure=true", "ch", 19440, "db", "u", True),
    ("clickhouse://ch/db?secure=0", "ch", 9000, "db", "default", False),
])
def test_defaults(url: str, host: str, port: int, database: str, user: str, secure: bool) -> None:
    assert parse_clickhouse_url(url) == ClickHouseTarget(host, port, database, user, None, secure)


def test_embedded_chdb_is_no_server() -> None:
    assert parse_clickhouse_url("chdb:///var/lib/billing/chdb") is None


def test_the_password_may_come_from_its_own_variable() -> None:
    target = parse_clickhouse_url("clickhouse://ana@ch/db", SECRET)
    assert target is not None and (target.user, target.password) == ("ana", SECRET)


@pytest.mark.parametrize(("url", "password", "expected"), [
    (f"http://ana:{SECRET}@ch/db", None, "must start with clickhouse://"),
    (f"clickhouse://ana:{ENCODED}@ch:port/db", None, "Port could not be cast"),
    (f"clickhouse://ana:{ENCODED}@ch:70000/db", None, "out of range"),
    (f"clickhouse://ana:{ENCODED}@[::1/db", None, "Invalid IPv6 URL"),
    (f"clickhouse://ana:{ENCODED}@ch/a/b", None, "one database name"),
    (f"clickhouse://ana:{ENCODED}@ch/db?compression=lz4", None, "unknown option(s) compression"),
    (f"clickhouse://ana:{ENCODED}@ch/db?secure=maybe", None, "must be 1 or 0"),
    (f"clickhouse://ana:{ENCODED}@ch/db?ca_certs=/etc/hosts", None, "only used with secure=1"),
    (f"clickhouse://ana:{ENCODED}@ch/db?secure=1&ca_certs=/no/such.pem", None,
     "is not a readable file"),
    (f"clickhouse://ana:{ENCODED}@ch/db", "other", "BILLING_CLICKHOUSE_PASSWORD is set too"),
    ("chdb:///tmp/chdb", SECRET, "BILLING_CLICKHOUSE_PASSWORD is set, but"),
])
def test_errors_name_the_variable_and_never_the_password(url: str, password: str | None,
                                                         expected: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_clickhouse_url(url, password)
    message = str(raised.value)
    assert expected in message and "BILLING_CLICKHOUSE_URL" in message
    assert SECRET not in message and ENCODED not in message


def test_masking_and_leaving_out_the_password() -> None:
    url = f"clickhouse://ana:{ENCODED}@ch:9440/db?secure=1"
    assert mask_url(url) == "clickhouse://ana:***@ch:9440/db?secure=1"
    assert url_without_password(url) == "clickhouse://ana@ch:9440/db?secure=1"
    for unchanged in ("clickhouse://ana@ch/db", "chdb://a:b@c/dir"):
        assert mask_url(unchanged) == url_without_password(unchanged) == unchanged


def test_settings_keep_the_password_apart_and_masked() -> None:
    settings = load_settings({"BILLING_CLICKHOUSE_URL": f"clickhouse://ana:{ENCODED}@ch/db"})
    assert settings.clickhouse_url == "clickhouse://ana@ch/db"
    assert settings.clickhouse_password == SECRET
    assert SECRET not in repr(settings) and ENCODED not in repr(settings)
    target = server_target(settings)
    assert target is not None and (target.user, target.password) == ("ana", SECRET)
    # A child process gets the password through its own variable and reads the same settings.
    assert settings.to_env()["BILLING_CLICKHOUSE_PASSWORD"] == SECRET
    assert load_settings(settings.to_env()) == settings


def test_settings_without_a_password_export_none() -> None:
    settings = load_settings({"BILLING_CLICKHOUSE_URL": "clickhouse://ch/db"})
    assert settings.clickhouse_password is None
    assert "BILLING_CLICKHOUSE_PASSWORD" not in settings.to_env()


def test_every_client_gets_the_login_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    settings = load_settings({
        "BILLING_CLICKHOUSE_URL": f"clickhouse://ana@ch/db?secure=1&ca_certs={ca}",
        "BILLING_CLICKHOUSE_PASSWORD": SECRET,
    })
    writer = open_writer(settings)  # clickhouse-driver connects on the first query only
    assert isinstance(writer, DriverWriter) and writer.target == server_target(settings)
    connection = clickhouse_client(writer.target).connection
    assert (connection.hosts[0], connection.database, connection.user) == (("ch", 9440), "db",
                                                                           "ana")
    assert connection.password == SECRET and connection.secure_socket
    assert connection.ssl_options == {"ca_certs": str(ca)}


def test_a_command_with_a_bad_url_shows_no_secret() -> None:
    result = CliRunner().invoke(main, ["sql", "SELECT 1"], env={
        "BILLING_CLICKHOUSE_URL": f"clickhouse://ana:{ENCODED}@ch/db?secure=1&ca_certs=/nope"})
    assert result.exit_code == 2, result.output
    assert "ca_certs='/nope' is not a readable file" in result.output
    assert "clickhouse://ana:***@ch/db" in result.output
    assert SECRET not in result.output and ENCODED not in result.output
