"""Kafka security settings as client arguments: kafka-python keywords and Faust credentials.

The project talks to Kafka through two libraries: kafka-python (producer, tools, sink, topic
creation) and Faust over aiokafka (the worker). They spell the same security settings
differently, so the translation from :class:`~runtime.settings.KafkaSecurity` lives here, once:
every client the project creates gets its security from this module and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.settings import KafkaSecurity, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``.

    Only the keys the protocol uses are given, so PLAINTEXT clients are configured exactly as
    before. A CA file of None means the system's trusted CAs (a public managed service).
    """
    security = settings.kafka_security
    kwargs: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_sasl:
        kwargs.update(sasl_mechanism=security.sasl_mechanism,
                      sasl_plain_username=security.sasl_username,
                      sasl_plain_password=security.sasl_password)
    if security.uses_ssl:
        files = {"ssl_cafile": security.ssl_cafile, "ssl_certfile": security.ssl_certfile,
                 "ssl_keyfile": security.ssl_keyfile}
        kwargs.update({key: str(path) for key, path in files.items() if path is not None})
    return kwargs


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """The Faust app's ``broker_credentials``: None for PLAINTEXT, else SSL or SASL credentials
    with an SSL context built by aiokafka from the CA (and client certificate) files. The worker
    gets them as ``settings.kafka_security.faust_credentials()``."""
    if security.protocol == "PLAINTEXT":
        return None
    import faust

    context = _ssl_context(security) if security.uses_ssl else None
    if not security.uses_sasl:
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(username=security.sasl_username,
                                 password=security.sasl_password,
                                 mechanism=security.sasl_mechanism, ssl_context=context)


def _ssl_context(security: KafkaSecurity) -> Any:
    """aiokafka's client SSL context: verifies the broker's certificate and host name."""
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(cafile=security.ssl_cafile, certfile=security.ssl_certfile,
                              keyfile=security.ssl_keyfile)
