"""The worker's start-up checks: what would otherwise fail later, silently or for ever.

``billing worker`` runs :func:`preflight` before the Faust app starts. Each refused setting
raises :class:`~runtime.settings.SettingsError` with one message that names the setting or topic
and the fix, so the command ends with exit status 2 like any other bad setting:

- the input topics exist, are co-partitioned (one partition count), and agree with
  ``BILLING_PARTITIONS``. When ``BILLING_PARTITIONS`` is not set, the worker takes the count
  from the topics (and says so) rather than its default of 4: a worker with another count than
  its inputs would build its tables and month-close broadcasts with the wrong one;
- every input topic appends with ``message.timestamp.type=LogAppendTime``: the broker's clock is
  the reference (billing rules, section 4); ``CreateTime`` would let a producer's clock decide;
- the session timeout lies within the broker's ``group.min.session.timeout.ms`` ..
  ``group.max.session.timeout.ms`` (read from the broker; Kafka's defaults, 6 s .. 30 min, when
  the principal may not read them) and within Faust's request timeout, with a heartbeat interval
  of at most a third of it. Outside the broker's bounds the group refuses the worker's every join
  (one log line, then a worker that idles for ever).

An unknown ``BILLING_*`` variable is only warned about (:func:`unknown_variable_warnings`), with
the close known name: a misspelt ``BILLING_PARTITONS`` is otherwise silently ignored.

A broker that does not answer is not a bad setting: :class:`BrokerUnavailable` (the worker exits
with status 75, "try again", for its supervisor to restart it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import click
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from runtime.settings import (
    Settings,
    SettingsError,
    settings_variables,
    topic_variable,
    unknown_variables,
)
from runtime.topics import (
    LOG_APPEND_TIME,
    TIMESTAMP_TYPE,
    StackError,
    admin_client,
    partition_counts,
    set_timestamp_command,
    topic_configs,
)

log = logging.getLogger("billing.worker")

SESSION_TIMEOUT_SETTING = "BILLING_SESSION_TIMEOUT (--session-timeout)"
MIN_SESSION_KEY, MAX_SESSION_KEY = "group.min.session.timeout.ms", "group.max.session.timeout.ms"
# Kafka's defaults of those two broker settings (6 s, 30 min).
DEFAULT_SESSION_BOUNDS_MS = (6_000, 1_800_000)
# Faust's broker_request_timeout (the worker keeps Faust's default): Faust refuses a session
# timeout above it when the consumer starts, after the worker has begun starting up.
FAUST_REQUEST_TIMEOUT = 90.0
# Variables read outside settings and click options (runtime/web_auth.py reads it from os.environ).
OTHER_VARIABLES = frozenset({"BILLING_DASHBOARD_TOKEN", "BILLING_WORKER_WEB_TOKEN"})


class BrokerUnavailable(RuntimeError):
    """Kafka did not answer the checks: not a bad setting, try again later."""


@dataclass(frozen=True)
class SessionBounds:
    """The broker's bounds for a consumer group member's session timeout, in milliseconds."""

    min_ms: int
    max_ms: int
    source: str  # where they come from, for messages: "broker 1", or why the defaults


def heartbeat_interval(session_timeout: float) -> float:
    """The heartbeat interval the worker uses for ``session_timeout`` (``streams/worker.py``
    passes ``min(3.0, session_timeout / 4)`` to Faust; a unit test keeps the two equal)."""
    return min(3.0, session_timeout / 4)


def preflight(settings: Settings, session_timeout: float,
              env: Mapping[str, str]) -> Settings:
    """Run the checks against the broker; return the settings the worker must use (the
    partition count taken from the topics when ``BILLING_PARTITIONS`` is not set). Raises
    :class:`SettingsError` for a refused setting, :class:`BrokerUnavailable` when Kafka does not
    answer."""
    check_session_timeout_locally(session_timeout)
    try:
        with admin_client(settings) as admin:
            settings = check_input_topics(settings, admin, env)
            bounds = session_bounds(admin)
    except StackError as error:
        raise BrokerUnavailable(str(error)) from None
    except KafkaError as error:
        raise BrokerUnavailable(f"Kafka at {settings.kafka_bootstrap} failed a start-up check: "
                                f"{error!r}") from None
    check_session_timeout(session_timeout, heartbeat_interval(session_timeout), bounds)
    return settings


def _named(settings: Settings, topic: str) -> str:
    variable = topic_variable(settings, topic)
    return f"{topic} ({variable})" if variable else topic


def check_input_topics(settings: Settings, admin: KafkaAdminClient,
                       env: Mapping[str, str]) -> Settings:
    """The inputs exist, are co-partitioned, agree with ``BILLING_PARTITIONS`` (or give it its
    value when it is not set), and use ``LogAppendTime``."""
    inputs = settings.topics.inputs
    counts = partition_counts(admin, inputs)
    missing = [topic for topic in inputs if topic not in counts]
    if missing:
        raise SettingsError(
            f"Input topic(s) {', '.join(_named(settings, t) for t in missing)} do not exist on "
            f"{settings.kafka_bootstrap}: create them with `billing stack topics` (with the "
            "same BILLING_* settings), or set the BILLING_TOPIC_* variable to the existing name.")
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{topic} has {counts[topic]}" for topic in inputs)
        raise SettingsError(
            f"The input topics are not co-partitioned ({found} partitions): an account's events "
            "must all be in the same partition number. A topic's count cannot be changed in "
            "place; re-create the inputs under new names with one count (docs/operations.md, "
            "\"Scaling partitions\").")
    count = counts[inputs[0]]
    if env.get("BILLING_PARTITIONS"):
        if settings.partitions != count:
            raise SettingsError(
                f"BILLING_PARTITIONS={settings.partitions}, but the input topics "
                f"({', '.join(inputs)}) have {count} partitions: set BILLING_PARTITIONS={count}, "
                "or unset it (the worker then takes the count from the topics).")
    elif settings.partitions != count:
        click.echo(f"billing worker: BILLING_PARTITIONS is not set: using the input topics' "
                   f"{count} partitions (not the default {settings.partitions})", err=True)
        settings = replace(settings, partitions=count)
    check_timestamp_type(settings, topic_configs(admin, inputs, keys=[TIMESTAMP_TYPE]))
    return settings


def check_timestamp_type(settings: Settings, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Every input topic's ``message.timestamp.type`` is ``LogAppendTime`` (``configs``: topic
    -> its configuration, as :func:`runtime.topics.topic_configs` reads it)."""
    wrong = {topic: configs.get(topic, {}).get(TIMESTAMP_TYPE)
             for topic in settings.topics.inputs}
    wrong = {topic: value for topic, value in wrong.items() if value != LOG_APPEND_TIME}
    if not wrong:
        return
    unreadable = [topic for topic, value in wrong.items() if value is None]
    if unreadable:
        raise SettingsError(
            f"Could not read {TIMESTAMP_TYPE} of input topic(s) {', '.join(unreadable)} on "
            f"{settings.kafka_bootstrap}: the worker's principal needs DESCRIBE_CONFIGS on the "
            "input topics (docs/operations.md, ACLs).")
    found = ", ".join(f"{_named(settings, topic)} uses {TIMESTAMP_TYPE}={value}"
                      for topic, value in wrong.items())
    commands = "; ".join(set_timestamp_command(settings.kafka_bootstrap, topic)
                         for topic in wrong)
    raise SettingsError(
        f"{found}: the input topics must use {TIMESTAMP_TYPE}={LOG_APPEND_TIME} (the broker's "
        "clock is the reference for every input; with CreateTime the producers' clocks would "
        "be). Fix: `billing stack topics` (with the same BILLING_* settings) sets it; or "
        f"{commands}; on a managed cluster, set the topic property {TIMESTAMP_TYPE}="
        f"{LOG_APPEND_TIME} in the provider's console or Terraform.")


def session_bounds(admin: KafkaAdminClient) -> SessionBounds:
    """The broker's session timeout bounds (any broker: a cluster runs one configuration);
    Kafka's defaults, with the reason, when they cannot be read (no DESCRIBE_CONFIGS on the
    cluster, common on managed clusters)."""
    try:
        brokers = admin.describe_cluster()["brokers"]
        broker = str(min(b["broker_id"] for b in brokers))
        response = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, [MIN_SESSION_KEY, MAX_SESSION_KEY])],
            config_filter="all")
        values = response.get("broker", {}).get(broker, {})
        return SessionBounds(int(values[MIN_SESSION_KEY]["value"]),
                             int(values[MAX_SESSION_KEY]["value"]), f"broker {broker}")
    except (KafkaError, KeyError, TypeError, ValueError) as error:
        why = f"Kafka's defaults: the broker's could not be read ({error!r})"
        log.warning("session_bounds_unknown using=%s..%s ms reason=%r",
                    *DEFAULT_SESSION_BOUNDS_MS, why)
        return SessionBounds(*DEFAULT_SESSION_BOUNDS_MS, why)


def check_session_timeout_locally(session_timeout: float) -> None:
    """What needs no broker: a positive timeout, within Faust's request timeout."""
    if session_timeout <= 0:
        raise SettingsError(f"{SESSION_TIMEOUT_SETTING}={session_timeout:g} s must be positive "
                            "(default 30 s)")
    if session_timeout > FAUST_REQUEST_TIMEOUT:
        raise SettingsError(
            f"{SESSION_TIMEOUT_SETTING}={session_timeout:g} s is more than Faust's request "
            f"timeout ({FAUST_REQUEST_TIMEOUT:g} s), which Faust refuses: set it to at most "
            f"{FAUST_REQUEST_TIMEOUT:g} (default 30).")


def check_session_timeout(session_timeout: float, heartbeat: float,
                          bounds: SessionBounds) -> None:
    """Within the broker's bounds, and heartbeats at least three per session timeout (Kafka's
    advice: a member misses a heartbeat or two without being taken for dead)."""
    check_session_timeout_locally(session_timeout)
    timeout_ms = int(session_timeout * 1000)
    if not bounds.min_ms <= timeout_ms <= bounds.max_ms:
        low = bounds.min_ms / 1000
        high = min(bounds.max_ms / 1000, FAUST_REQUEST_TIMEOUT)
        raise SettingsError(
            f"{SESSION_TIMEOUT_SETTING}={session_timeout:g} s ({timeout_ms} ms) is outside the "
            f"broker's {MIN_SESSION_KEY}={bounds.min_ms} .. {MAX_SESSION_KEY}={bounds.max_ms} "
            f"({bounds.source}): the broker would refuse the worker's group membership. Set it "
            f"between {low:g} and {high:g} seconds (default 30), or change the broker's bounds.")
    if heartbeat <= 0 or heartbeat > session_timeout / 3:
        raise SettingsError(
            f"The heartbeat interval ({heartbeat:g} s) must be positive and at most a third of "
            f"{SESSION_TIMEOUT_SETTING}={session_timeout:g} s.")


def known_variables(root: click.Command) -> frozenset[str]:
    """Every ``BILLING_*`` variable the program reads: those :func:`load_settings` asks for,
    the ``envvar`` of every option of the ``billing`` command tree ``root``, and
    :data:`OTHER_VARIABLES`."""
    names = set(settings_variables()) | OTHER_VARIABLES
    for command in _commands(root):
        for param in command.params:
            envvar = param.envvar
            names.update([envvar] if isinstance(envvar, str) else envvar or ())
    return frozenset(names)


def _commands(command: click.Command) -> Iterable[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for child in command.commands.values():
            yield from _commands(child)


def unknown_variable_warnings(env: Mapping[str, str], root: click.Command) -> list[str]:
    """Warnings for the ``BILLING_*`` variables of ``env`` that the program does not read."""
    return unknown_variables(env, known_variables(root))
