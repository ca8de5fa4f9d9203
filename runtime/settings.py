"""Runtime settings: where Kafka and ClickHouse are, what the topics are called, where data lives.

Everything is read from environment variables (``BILLING_*``) with defaults that point at the local
stack started by ``billing stack up``, so the same code runs against an existing cluster by setting
variables and nothing else. Values are validated here, once, so a bad setting fails at start with a
message that names the variable.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from schemas.topics import Topics

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAX_MESSAGE_BYTES = 65536  # BILLING_MAX_MESSAGE_BYTES
DEFAULT_CLOSE_ACCOUNTS_PER_BATCH = 2000  # BILLING_CLOSE_ACCOUNTS_PER_BATCH


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


class Secret(str):
    """A string whose ``repr`` is masked: a password that reaches a client's configuration.

    kafka-python logs its whole configuration (``KafkaAdminClient`` at DEBUG, as a dict, so values
    are shown with ``repr``) and dataclasses print their fields with ``repr``; both show ``'***'``.
    It is still a ``str`` for the clients that use the value.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to Kafka and encrypt the connection (a managed cluster).

    Built and validated by :func:`load_settings`; turned into client arguments by
    :mod:`runtime.kafka_security`. The password is a :class:`Secret`, so printing or logging
    settings or a client's configuration never shows it.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol.endswith("SSL")

    def to_env(self) -> dict[str, str]:
        """The ``BILLING_KAFKA_*`` security variables; includes the password, for child
        processes only: never log the result."""
        values = {
            "BILLING_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "BILLING_KAFKA_SASL_MECHANISM": self.sasl_mechanism,
            "BILLING_KAFKA_SASL_USERNAME": self.sasl_username,
            "BILLING_KAFKA_SASL_PASSWORD": self.sasl_password,
            "BILLING_KAFKA_SSL_CAFILE": self.ssl_cafile,
            "BILLING_KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "BILLING_KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        return {name: str(value) for name, value in values.items() if value is not None}

    def faust_credentials(self) -> Any:
        """The Faust app's ``broker_credentials``: see :func:`runtime.kafka_security.
        faust_credentials` (imported here, when asked, because it needs Faust)."""
        from runtime.kafka_security import faust_credentials

        return faust_credentials(self)


CLICKHOUSE_URL_FORM = ("clickhouse://[user[:password]@]host[:port][/database]"
                       "[?secure=1[&ca_certs=FILE]]")
CLICKHOUSE_NATIVE_PORT, CLICKHOUSE_SECURE_PORT = 9000, 9440
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True)
class ClickHouseTarget:
    """A ClickHouse server a ``clickhouse://`` URL names: where, which database, as whom, and
    whether over TLS. Built by :func:`parse_clickhouse_url`; :func:`devkit.stack.clickhouse.
    clickhouse_client` makes the one kind of client every command uses from it.

    The password is a :class:`Secret`, so printing the target never shows it.
    """

    host: str
    port: int
    database: str
    user: str = "default"
    password: Secret | None = None
    secure: bool = False
    ca_certs: Path | None = None


def _replace_password(url: str, replacement: str | None) -> str:
    """A server URL with its password replaced (None: left out, the user stays). A ``chdb://``
    directory path is not a URL and is returned as it is."""
    if url.startswith("chdb://"):
        return url
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:  # not parseable: show nothing of it rather than a secret
        return "<not shown: not a valid URL>"
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    password = "" if replacement is None else f":{replacement}"
    return parts._replace(netloc=f"{user}{password}@{host}").geturl()


def mask_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``: for messages and logs."""
    return _replace_password(url, "***")


def url_without_password(url: str) -> str:
    """``url`` without its password: what settings keep (every command may print it)."""
    return _replace_password(url, None)


def parse_clickhouse_url(url: str, password: str | None = None) -> ClickHouseTarget | None:
    """The server of ``BILLING_CLICKHOUSE_URL``; None for embedded ``chdb://DIR``.

    User and password are URL-decoded (``%40`` for ``@``, ``%3A`` for ``:``). ``password`` is
    ``BILLING_CLICKHOUSE_PASSWORD``, which keeps the secret out of the URL; giving both is
    refused. ``secure=1`` is TLS (default port 9440), ``ca_certs`` the PEM file of the CA that
    signed the server's certificate (default: the system's). Raises :class:`SettingsError`
    naming the variable, with the URL's password masked.
    """
    shown = f"BILLING_CLICKHOUSE_URL={mask_url(url)!r}"
    if url.startswith("chdb://"):
        if password:
            raise SettingsError(f"BILLING_CLICKHOUSE_PASSWORD is set, but {shown} is embedded "
                                "chdb, which has no login: unset it or name a clickhouse:// "
                                "server")
        return None
    if not url.startswith("clickhouse://"):
        raise SettingsError(f"{shown} must start with clickhouse:// (a server, native protocol: "
                            f"{CLICKHOUSE_URL_FORM}) or chdb:// (embedded, a directory path)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # a bad IPv6 address or port
        raise SettingsError(f"{shown}: {error}") from None
    database = parts.path.strip("/") or "default"
    if "/" in database:
        raise SettingsError(f"{shown}: the path is one database name, not {database!r}")
    if parts.password is not None and password:
        raise SettingsError(f"{shown} has a password and BILLING_CLICKHOUSE_PASSWORD is set "
                            "too: keep one of them")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"secure", "ca_certs"})
    if unknown:
        raise SettingsError(f"{shown}: unknown option(s) {', '.join(unknown)}; the URL takes "
                            "secure=1 and ca_certs=FILE")
    secure_text = options.get("secure", "0").lower()
    if secure_text not in _TRUE + _FALSE:
        raise SettingsError(f"{shown}: secure={options['secure']!r} must be 1 or 0")
    secure = secure_text in _TRUE
    ca_certs = None
    if "ca_certs" in options:
        if not secure:
            raise SettingsError(f"{shown}: ca_certs is only used with secure=1 (TLS)")
        ca_certs = Path(options["ca_certs"]).expanduser().resolve()
        if not ca_certs.is_file():
            raise SettingsError(f"{shown}: ca_certs={options['ca_certs']!r} is not a readable "
                                "file")
    secret = unquote(parts.password) if parts.password is not None else password
    return ClickHouseTarget(
        host=parts.hostname or "127.0.0.1",
        port=port or (CLICKHOUSE_SECURE_PORT if secure else CLICKHOUSE_NATIVE_PORT),
        database=database,
        user=unquote(parts.username) if parts.username else "default",
        password=Secret(secret) if secret else None,
        secure=secure,
        ca_certs=ca_certs,
    )


@dataclass(frozen=True)
class Settings:
    """Where everything is. Build with :func:`load_settings`; never mutate."""

    data_dir: Path
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    clickhouse_url: str
    clickhouse_port: int
    clickhouse_http_port: int
    partitions: int
    replication_factor: int
    schema_registry_url: str | None
    topics: Topics = field(default_factory=Topics)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # Downloaded tools of the local stack (Maven repo, Kafka jars); None means data_dir. Kept apart
    # so a test session's throw-away data_dir reuses jars that were downloaded once.
    cache_dir: Path | None = None
    # The ClickHouse password, taken out of clickhouse_url (which every command may print) or
    # from BILLING_CLICKHOUSE_PASSWORD; masked in repr.
    clickhouse_password: Secret | None = None
    # The largest input message (key or value, bytes) the worker processes; a larger one is
    # dead-lettered (schemas.codec.check_message_size), its dead letter carrying a prefix.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # The accounts a broadcast month close closes per batch (streams.apply): 95-200 µs each, so a
    # partition's other events, and the worker's other partitions, wait 0.2-0.4 s per batch.
    close_accounts_per_batch: int = DEFAULT_CLOSE_ACCOUNTS_PER_BATCH
    # The billing configuration and the price book (JSON or YAML); None: the rules' defaults and
    # the shipped price book (runtime.rules_files reads them).
    config_path: Path | None = None
    pricebook_path: Path | None = None

    def to_env(self) -> dict[str, str]:
        """The ``BILLING_*`` variables that reproduce these settings in a child process.

        They include the Kafka and ClickHouse passwords when set (the child must connect too), so
        the result goes to a child's environment only, never to a log.
        """
        env = {
            "BILLING_DATA_DIR": str(self.data_dir),
            "BILLING_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "BILLING_KAFKA_PORT": str(self.kafka_port),
            "BILLING_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
            "BILLING_CLICKHOUSE_URL": self.clickhouse_url,
            "BILLING_CLICKHOUSE_PORT": str(self.clickhouse_port),
            "BILLING_CLICKHOUSE_HTTP_PORT": str(self.clickhouse_http_port),
            "BILLING_PARTITIONS": str(self.partitions),
            "BILLING_REPLICATION_FACTOR": str(self.replication_factor),
            "BILLING_MAX_MESSAGE_BYTES": str(self.max_message_bytes),
            "BILLING_CLOSE_ACCOUNTS_PER_BATCH": str(self.close_accounts_per_batch),
        }
        if self.schema_registry_url:
            env["BILLING_SCHEMA_REGISTRY_URL"] = self.schema_registry_url
        if self.cache_dir is not None:
            env["BILLING_CACHE_DIR"] = str(self.cache_dir)
        if self.config_path is not None:
            env["BILLING_CONFIG"] = str(self.config_path)
        if self.pricebook_path is not None:
            env["BILLING_PRICEBOOK"] = str(self.pricebook_path)
        if self.clickhouse_password:
            env["BILLING_CLICKHOUSE_PASSWORD"] = str(self.clickhouse_password)
        for name, variable in TOPIC_VARIABLES:
            env[variable] = getattr(self.topics, name)
        env.update(self.kafka_security.to_env())
        return env

    @property
    def uses_local_kafka(self) -> bool:
        """True when the bootstrap servers are the local stack's (``billing stack`` runs it)."""
        return self.kafka_bootstrap == f"127.0.0.1:{self.kafka_port}"


TOPIC_VARIABLES = (
    ("usage", "BILLING_TOPIC_USAGE"),
    ("payments", "BILLING_TOPIC_PAYMENTS"),
    ("accounts", "BILLING_TOPIC_ACCOUNTS"),
    ("control", "BILLING_TOPIC_CONTROL"),
    ("account_state", "BILLING_TOPIC_ACCOUNT_STATE"),
    ("dead_letter", "BILLING_TOPIC_DEAD_LETTER"),
    ("usage_rated", "BILLING_TOPIC_USAGE_RATED"),
    ("account_status", "BILLING_TOPIC_ACCOUNT_STATUS"),
)


def topic_variable(settings: Settings, topic: str) -> str | None:
    """The ``BILLING_TOPIC_*`` variable that names ``topic`` in ``settings`` (for messages)."""
    for name, variable in TOPIC_VARIABLES:
        if getattr(settings.topics, name) == topic:
            return variable
    return None


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1, high: int = 65535) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range [{low}, {high}]")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if raw.upper() not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw.upper()


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r} is not a readable file")
    return path


def load_kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """The ``BILLING_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_*`` / ``_SSL_*`` variables, checked
    together. A setting the protocol would silently ignore is refused: it almost always means the
    protocol was forgotten, and the client would then connect without the intended security."""
    protocol = _choice(env, "BILLING_KAFKA_SECURITY_PROTOCOL", SECURITY_PROTOCOLS) or "PLAINTEXT"
    mechanism = _choice(env, "BILLING_KAFKA_SASL_MECHANISM", SASL_MECHANISMS)
    password = env.get("BILLING_KAFKA_SASL_PASSWORD")
    sasl = {"BILLING_KAFKA_SASL_USERNAME": env.get("BILLING_KAFKA_SASL_USERNAME") or None,
            "BILLING_KAFKA_SASL_PASSWORD": Secret(password) if password else None}
    ssl = {name: _file(env, name) for name in
           ("BILLING_KAFKA_SSL_CAFILE", "BILLING_KAFKA_SSL_CERTFILE", "BILLING_KAFKA_SSL_KEYFILE")}
    uses_sasl, uses_ssl = KafkaSecurity(protocol).uses_sasl, KafkaSecurity(protocol).uses_ssl
    ignored = [name for name, value in {"BILLING_KAFKA_SASL_MECHANISM": mechanism, **sasl}.items()
               if value is not None and not uses_sasl]
    ignored += [name for name, value in ssl.items() if value is not None and not uses_ssl]
    if ignored:
        raise SettingsError(
            f"{', '.join(ignored)} set, but BILLING_KAFKA_SECURITY_PROTOCOL={protocol} does not "
            f"use it: set the protocol ({', '.join(SECURITY_PROTOCOLS[1:])}) or unset it")
    missing = [name for name, value in sasl.items() if uses_sasl and value is None]
    if missing:
        raise SettingsError(
            f"{' and '.join(missing)} must be set with BILLING_KAFKA_SECURITY_PROTOCOL={protocol}")
    if ssl["BILLING_KAFKA_SSL_KEYFILE"] and not ssl["BILLING_KAFKA_SSL_CERTFILE"]:
        raise SettingsError("BILLING_KAFKA_SSL_KEYFILE is set without BILLING_KAFKA_SSL_CERTFILE "
                            "(the client certificate the key belongs to)")
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism or ("PLAIN" if uses_sasl else None),
        sasl_username=sasl["BILLING_KAFKA_SASL_USERNAME"],
        sasl_password=sasl["BILLING_KAFKA_SASL_PASSWORD"],
        ssl_cafile=ssl["BILLING_KAFKA_SSL_CAFILE"],
        ssl_certfile=ssl["BILLING_KAFKA_SSL_CERTFILE"],
        ssl_keyfile=ssl["BILLING_KAFKA_SSL_KEYFILE"],
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment) and validate them."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("BILLING_DATA_DIR") or REPO_ROOT / "var").expanduser().resolve()
    kafka_port = _int(env, "BILLING_KAFKA_PORT", 19092)
    controller_port = _int(env, "BILLING_KAFKA_CONTROLLER_PORT", kafka_port + 1)
    clickhouse_port = _int(env, "BILLING_CLICKHOUSE_PORT", 19000)
    clickhouse_http_port = _int(env, "BILLING_CLICKHOUSE_HTTP_PORT", 18123)
    bootstrap = env.get("BILLING_KAFKA_BOOTSTRAP") or f"127.0.0.1:{kafka_port}"
    if any(not part.rpartition(":")[2].isdigit() for part in bootstrap.split(",")):
        raise SettingsError(
            f"BILLING_KAFKA_BOOTSTRAP={bootstrap!r} must be host:port[,host:port...]"
        )
    clickhouse_url = env.get("BILLING_CLICKHOUSE_URL") or "chdb://" + str(data_dir / "chdb")
    clickhouse = parse_clickhouse_url(clickhouse_url, env.get("BILLING_CLICKHOUSE_PASSWORD"))
    topics = Topics(**{name: env[var] for name, var in TOPIC_VARIABLES if env.get(var)})
    return Settings(
        data_dir=data_dir,
        kafka_bootstrap=bootstrap,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        clickhouse_url=url_without_password(clickhouse_url),
        clickhouse_port=clickhouse_port,
        clickhouse_http_port=clickhouse_http_port,
        partitions=_int(env, "BILLING_PARTITIONS", 4, high=1024),
        replication_factor=_int(env, "BILLING_REPLICATION_FACTOR", 1, high=16),
        schema_registry_url=env.get("BILLING_SCHEMA_REGISTRY_URL") or None,
        topics=topics,
        kafka_security=load_kafka_security(env),
        cache_dir=Path(env["BILLING_CACHE_DIR"]).expanduser().resolve()
        if env.get("BILLING_CACHE_DIR")
        else None,
        clickhouse_password=clickhouse.password if clickhouse else None,
        max_message_bytes=_int(env, "BILLING_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES,
                               high=2**31 - 1),
        close_accounts_per_batch=_int(env, "BILLING_CLOSE_ACCOUNTS_PER_BATCH",
                                      DEFAULT_CLOSE_ACCOUNTS_PER_BATCH, high=10_000_000),
        config_path=_path(env, "BILLING_CONFIG"),
        pricebook_path=_path(env, "BILLING_PRICEBOOK"),
    )


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw).expanduser() if raw else None


class _ReadRecorder(Mapping[str, str]):
    """An empty environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_variables() -> frozenset[str]:
    """Every ``BILLING_*`` variable :func:`load_settings` reads: recorded by running it on an
    empty environment (it asks for each one, set or not), so the list cannot drift from the code.
    """
    recorder = _ReadRecorder()
    load_settings(recorder)
    return frozenset(recorder.read)


def unknown_variables(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One warning per ``BILLING_*`` variable of ``env`` that nothing reads (a typo is otherwise
    silently ignored), with the close known names (difflib) as "did you mean"."""
    prefix = "BILLING_"
    # Compared without the prefix they all share, which would make any two names look close.
    known_suffixes = sorted(name.removeprefix(prefix) for name in set(known))
    warnings = []
    for name in sorted(variable for variable in env if variable.startswith(prefix)):
        suffix = name.removeprefix(prefix)
        if suffix in known_suffixes:
            continue
        close = [prefix + match for match in
                 difflib.get_close_matches(suffix, known_suffixes, n=3, cutoff=0.75)]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        warnings.append(f"{name} is set, but no setting has that name: it is ignored{hint}")
    return warnings


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700 (data only its owner may read:
    broker logs, ClickHouse tables, RocksDB files). Directories that exist are left alone; see
    :func:`make_private`."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # created concurrently
            continue
        directory.chmod(0o700)  # mkdir's mode is masked by the umask; be exact
    return path


def make_private(path: Path) -> Path:
    """:func:`private_dir`, and an existing ``path`` that group or others may enter is
    restricted to its owner (a directory the project owns, created by an earlier version)."""
    private_dir(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path
