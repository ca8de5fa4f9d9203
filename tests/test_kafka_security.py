"""Kafka TLS/SASL settings: validated at load, translated once into client arguments.

No broker here: these check what ``load_settings`` accepts and refuses (naming the variable), what
kafka-python and Faust are given, and that the password never shows in a ``repr`` or a log line.
``tests/integration/test_kafka_sasl.py`` connects to a real SASL listener.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from click.testing import CliRunner

from billing.ledger import Ledger
from commands.cli import main
from runtime.kafka_security import faust_credentials, kafka_python_security
from runtime.produce import EventProducer
from runtime.rules_files import load_config, load_pricebook
from runtime.settings import SettingsError, load_settings
from streams.worker import LedgerWorker, WorkerOptions

PASSWORD = "s3cr3t-Pa55"
SASL = {"BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "BILLING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "BILLING_KAFKA_SASL_USERNAME": "billing-ledger",
        "BILLING_KAFKA_SASL_PASSWORD": PASSWORD}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key (PEM), usable as CA file and client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=kafka.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return {"cert": cert, "key": key}


def _refused(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    return str(raised.value)


# -- validation -------------------------------------------------------------------------------

def test_default_is_plaintext_and_adds_nothing_but_the_protocol() -> None:
    settings = load_settings({})
    assert settings.kafka_security.protocol == "PLAINTEXT"
    assert kafka_python_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings.kafka_security) is None


def test_protocol_and_mechanism_are_case_insensitive_and_sasl_defaults_to_plain() -> None:
    security = load_settings({"BILLING_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
                              "BILLING_KAFKA_SASL_USERNAME": "u",
                              "BILLING_KAFKA_SASL_PASSWORD": "p"}).kafka_security
    assert (security.protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert load_settings({**SASL, "BILLING_KAFKA_SASL_MECHANISM": "scram-sha-256"}
                         ).kafka_security.sasl_mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(("env", "named"), [
    ({"BILLING_KAFKA_SECURITY_PROTOCOL": "TLS"}, "BILLING_KAFKA_SECURITY_PROTOCOL='TLS'"),
    ({**SASL, "BILLING_KAFKA_SASL_MECHANISM": "GSSAPI"}, "BILLING_KAFKA_SASL_MECHANISM='GSSAPI'"),
    ({**SASL, "BILLING_KAFKA_SASL_USERNAME": ""}, "BILLING_KAFKA_SASL_USERNAME must be set"),
    ({"BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
     "BILLING_KAFKA_SASL_USERNAME and BILLING_KAFKA_SASL_PASSWORD must be set"),
    ({"BILLING_KAFKA_SASL_USERNAME": "u", "BILLING_KAFKA_SASL_PASSWORD": "p"},
     "BILLING_KAFKA_SASL_USERNAME, BILLING_KAFKA_SASL_PASSWORD set, but "
     "BILLING_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"BILLING_KAFKA_SECURITY_PROTOCOL": "SSL", "BILLING_KAFKA_SASL_MECHANISM": "PLAIN"},
     "BILLING_KAFKA_SASL_MECHANISM set, but BILLING_KAFKA_SECURITY_PROTOCOL=SSL"),
    ({**SASL, "BILLING_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "BILLING_KAFKA_SSL_CAFILE='/nonexistent/ca.pem' is not a readable file"),
])
def test_bad_security_settings_fail_at_load_naming_the_variable(
        env: dict[str, str], named: str) -> None:
    message = _refused(env)
    assert named in message
    assert PASSWORD not in message


def test_tls_files_need_a_tls_protocol_and_a_key_needs_its_certificate(
        tls_files: dict[str, Path]) -> None:
    ca = {"BILLING_KAFKA_SSL_CAFILE": str(tls_files["cert"])}
    assert "BILLING_KAFKA_SSL_CAFILE set, but BILLING_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in (
        _refused({**SASL, "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", **ca}))
    assert "BILLING_KAFKA_SSL_KEYFILE is set without BILLING_KAFKA_SSL_CERTFILE" in _refused(
        {"BILLING_KAFKA_SECURITY_PROTOCOL": "SSL", **ca,
         "BILLING_KAFKA_SSL_KEYFILE": str(tls_files["key"])})


def test_commands_refuse_bad_security_settings_before_connecting() -> None:
    result = CliRunner().invoke(main, ["stack", "topics"],
                                env={"BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert result.exit_code == 1
    assert "Error: BILLING_KAFKA_SASL_USERNAME and BILLING_KAFKA_SASL_PASSWORD must be set" in (
        result.output)


# -- the password stays out of sight ----------------------------------------------------------

def test_password_is_masked_in_reprs_but_reaches_clients_and_children() -> None:
    settings = load_settings(SASL)
    kwargs = kafka_python_security(settings)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in repr(kwargs) and "'***'" in repr(kwargs)
    assert kwargs["sasl_plain_password"] == PASSWORD  # the client gets the real value
    assert settings.to_env()["BILLING_KAFKA_SASL_PASSWORD"] == PASSWORD
    assert load_settings(settings.to_env()) == settings  # a child process gets the same settings


def test_kafka_python_debug_log_of_its_configuration_hides_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    """KafkaAdminClient logs its keyword arguments at DEBUG, as a dict (values by repr)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    settings = load_settings({**SASL, "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                              "BILLING_KAFKA_BOOTSTRAP": "127.0.0.1:9"})  # nothing listens
    with caplog.at_level(logging.DEBUG, logger="kafka"), pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, bootstrap_timeout_ms=200,
                         **kafka_python_security(settings))
    assert "sasl_plain_password" in caplog.text
    assert PASSWORD not in caplog.text


# -- translation ------------------------------------------------------------------------------

def test_sasl_ssl_for_kafka_python(tls_files: dict[str, Path]) -> None:
    settings = load_settings({**SASL, "BILLING_KAFKA_SSL_CAFILE": str(tls_files["cert"])})
    assert kafka_python_security(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "billing-ledger", "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(tls_files["cert"])}


def test_ssl_with_a_client_certificate_for_kafka_python(tls_files: dict[str, Path]) -> None:
    settings = load_settings({"BILLING_KAFKA_SECURITY_PROTOCOL": "SSL",
                              "BILLING_KAFKA_SSL_CAFILE": str(tls_files["cert"]),
                              "BILLING_KAFKA_SSL_CERTFILE": str(tls_files["cert"]),
                              "BILLING_KAFKA_SSL_KEYFILE": str(tls_files["key"])})
    assert kafka_python_security(settings) == {
        "security_protocol": "SSL", "ssl_cafile": str(tls_files["cert"]),
        "ssl_certfile": str(tls_files["cert"]), "ssl_keyfile": str(tls_files["key"])}


def test_faust_sasl_without_tls() -> None:
    credentials = faust_credentials(load_settings(
        {**SASL, "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}).kafka_security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None
    assert (credentials.username, credentials.password) == ("billing-ledger", PASSWORD)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert PASSWORD not in repr(credentials)


def test_faust_sasl_ssl_verifies_the_broker_with_the_ca_file(tls_files: dict[str, Path]) -> None:
    credentials = faust_credentials(load_settings(
        {**SASL, "BILLING_KAFKA_SSL_CAFILE": str(tls_files["cert"])}).kafka_security)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    context = credentials.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    [ca] = context.get_ca_certs()  # the CA file only, not the system's
    assert ca["subject"] == ((("commonName", "kafka.test"),),)


def test_faust_ssl_with_a_client_certificate(tls_files: dict[str, Path]) -> None:
    credentials = faust_credentials(load_settings({
        "BILLING_KAFKA_SECURITY_PROTOCOL": "SSL",
        "BILLING_KAFKA_SSL_CAFILE": str(tls_files["cert"]),
        "BILLING_KAFKA_SSL_CERTFILE": str(tls_files["cert"]),
        "BILLING_KAFKA_SSL_KEYFILE": str(tls_files["key"])}).kafka_security)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED


# -- wiring -----------------------------------------------------------------------------------

def test_the_worker_app_gets_the_credentials(tmp_path: Path) -> None:
    settings = load_settings({**SASL, "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                              "BILLING_DATA_DIR": str(tmp_path)})
    worker = LedgerWorker(settings, Ledger(load_config(None), load_pricebook(None)),
                          WorkerOptions(store="memory://"))
    credentials = worker.app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.mechanism.value) == ("billing-ledger",
                                                                   "SCRAM-SHA-512")


def test_the_event_producer_gets_the_security_keywords() -> None:
    created: list[dict[str, object]] = []

    class Recorder:
        def __init__(self, **config: object) -> None:
            created.append(config)

    EventProducer(load_settings({**SASL, "BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}),
                  producer_factory=Recorder)
    [config] = created
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    assert config["sasl_plain_password"] == PASSWORD and config["acks"] == "all"
