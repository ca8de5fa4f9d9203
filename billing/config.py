"""Billing configuration: tiers, cutover, free credit, grace period, the acceptance window.

Defaults are the billing rules' (section 5). A file (JSON or YAML) may override any of them; it is
validated once at start so a typo fails loudly instead of billing wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from billing.events import InvalidEvent, parse_time, to_money

ENTERPRISE_TIER = "enterprise"


class ConfigError(ValueError):
    """A configuration or price-book file is unreadable or invalid; fail at start with this."""


@dataclass(frozen=True)
class Tier:
    """One spend tier. ``qualifying_amount`` is the max(lifetime spend, lifetime credits purchased)
    at which it is reached (with a payment method on file); ``budget_max`` None means no cap."""

    name: str
    qualifying_amount: Decimal
    budget_max: Decimal | None
    rpm_limit: int
    tpm_limit: int


DEFAULT_TIERS = (
    Tier("0", Decimal("0"), None, 10, 60_000),
    Tier("1", Decimal("0"), Decimal("50.000000"), 6_000, 3_600_000),
    Tier("2", Decimal("50"), Decimal("500.000000"), 6_000, 7_200_000),
    Tier("3", Decimal("500"), Decimal("5000.000000"), 6_000, 18_000_000),
    Tier("4", Decimal("5000"), Decimal("50000.000000"), 6_000, 36_000_000),
)
DEFAULT_ENTERPRISE = Tier(ENTERPRISE_TIER, Decimal("0"), None, 6_000, 36_000_000)


@dataclass(frozen=True)
class BillingConfig:
    """Everything the ledger needs besides prices. Immutable, shared by all accounts."""

    prepaid_cutover: datetime = field(
        default_factory=lambda: parse_time("2025-06-01T00:00:00Z", "prepaid_cutover"))
    free_credit: Decimal = Decimal("1.000000")
    close_grace: timedelta = timedelta(hours=1)
    # The acceptance window (billing rules section 4, "Time and identity at the boundary"): an
    # event more than future_tolerance after the broker's append time is a bad clock; one more
    # than max_lateness before it (None: no limit) is too late to bill; one older than its
    # account's newest applied event by more than dedup_horizon cannot be proven not a copy.
    future_tolerance: timedelta = timedelta(minutes=5)  # Stripe's figure
    max_lateness: timedelta | None = None  # Stripe refuses 35 days; off by default (backfills)
    dedup_horizon: timedelta = timedelta(days=35)  # Stripe accepts 35 days back
    max_id_bytes: int = 256  # every id (event, account, payment, invoice ...), UTF-8 bytes
    invoice_net_terms: timedelta = timedelta(days=15)  # an invoice is due this long after issue
    # tiers[0] is the no-payment-method tier, tiers[1] the first tier with one; the rest are
    # reached by qualifying amount, in increasing order.
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    enterprise: Tier = DEFAULT_ENTERPRISE
    no_payment_method_rpm: int = 10

    def __post_init__(self) -> None:
        if len(self.tiers) < 2:
            raise ConfigError("tiers: need at least tier 0 (no payment method) and tier 1")
        amounts = [tier.qualifying_amount for tier in self.tiers[1:]]
        if any(lower >= higher for lower, higher in pairwise(amounts)):
            raise ConfigError("tiers: qualifying_amount must increase from one tier to the next "
                              "(a tier with the same amount as the one below is unreachable)")
        if len({tier.name for tier in self.tiers}) != len(self.tiers):
            raise ConfigError("tiers: names must be unique")
        if self.free_credit < 0 or self.close_grace < timedelta(0):
            raise ConfigError("free_credit and close_grace must not be negative")
        if self.dedup_horizon <= timedelta(0):
            raise ConfigError("dedup_horizon_seconds must be positive")
        if self.future_tolerance < timedelta(0):
            raise ConfigError("future_tolerance_seconds must not be negative")
        if self.max_lateness is not None and not \
                timedelta(0) < self.max_lateness <= self.dedup_horizon:
            raise ConfigError("max_lateness_seconds must be positive and at most "
                              "dedup_horizon_seconds (every accepted event must be checked "
                              "against every earlier one for copies); use null to turn it off")
        if self.max_id_bytes < 1:
            raise ConfigError("max_id_bytes must be a positive whole number")

    def tier_named(self, name: str) -> Tier:
        if name == self.enterprise.name:
            return self.enterprise
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)


def _amount(value: Any, where: str, nullable: bool = False) -> Decimal | None:
    if value is None and nullable:
        return None
    try:
        return to_money(value, where)
    except InvalidEvent as error:
        raise ConfigError(error.reason) from None


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive whole number, got {value!r}")
    return value


def _seconds(value: Any, where: str) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a whole number of seconds >= 0, got {value!r}")
    return timedelta(seconds=value)


def _tier(data: Any, where: str) -> Tier:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(data) - {"name", "qualifying_amount", "budget_max", "rpm_limit", "tpm_limit"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    return Tier(
        name=str(data.get("name", "")) or _fail(f"{where}.name is required"),
        qualifying_amount=_amount(data.get("qualifying_amount", "0"), f"{where}.qualifying_amount"),
        budget_max=_amount(data.get("budget_max"), f"{where}.budget_max", nullable=True),
        rpm_limit=_int(data.get("rpm_limit"), f"{where}.rpm_limit"),
        tpm_limit=_int(data.get("tpm_limit"), f"{where}.tpm_limit"),
    )


def _fail(message: str) -> str:
    raise ConfigError(message)


KNOWN_KEYS = {"prepaid_cutover", "free_credit", "close_grace_seconds", "dedup_horizon_seconds",
              "future_tolerance_seconds", "max_lateness_seconds", "max_id_bytes",
              "invoice_net_terms_days",
              "tiers", "enterprise", "no_payment_method_rpm"}


def config_from_mapping(data: dict[str, Any], source: str = "config") -> BillingConfig:
    """Validate a parsed configuration; absent keys keep their defaults."""
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    options: dict[str, Any] = {}
    try:
        if "prepaid_cutover" in data:
            options["prepaid_cutover"] = parse_time(data["prepaid_cutover"], "prepaid_cutover")
    except InvalidEvent as error:
        raise ConfigError(f"{source}: {error.reason}") from None
    if "free_credit" in data:
        options["free_credit"] = _amount(data["free_credit"], "free_credit")
    if "close_grace_seconds" in data:
        options["close_grace"] = _seconds(data["close_grace_seconds"], "close_grace_seconds")
    if "dedup_horizon_seconds" in data:
        options["dedup_horizon"] = _seconds(data["dedup_horizon_seconds"], "dedup_horizon_seconds")
    if "future_tolerance_seconds" in data:
        options["future_tolerance"] = _seconds(data["future_tolerance_seconds"],
                                               "future_tolerance_seconds")
    if data.get("max_lateness_seconds") is not None:
        options["max_lateness"] = _seconds(data["max_lateness_seconds"], "max_lateness_seconds")
    if "max_id_bytes" in data:
        options["max_id_bytes"] = _int(data["max_id_bytes"], "max_id_bytes")
    if "invoice_net_terms_days" in data:
        # a whole number of days >= 0 (0: due on the day of issue)
        options["invoice_net_terms"] = 86_400 * _seconds(data["invoice_net_terms_days"],
                                                         "invoice_net_terms_days")
    if "tiers" in data:
        if not isinstance(data["tiers"], list):
            raise ConfigError(f"{source}: tiers must be a list")
        options["tiers"] = tuple(_tier(item, f"tiers[{index}]")
                                 for index, item in enumerate(data["tiers"]))
    if "enterprise" in data:
        if not isinstance(data["enterprise"], dict):
            raise ConfigError(f"{source}: enterprise must be a mapping of tier settings")
        options["enterprise"] = _tier({"name": ENTERPRISE_TIER, **data["enterprise"]}, "enterprise")
    if "no_payment_method_rpm" in data:
        options["no_payment_method_rpm"] = _int(data["no_payment_method_rpm"],
                                                "no_payment_method_rpm")
    try:
        return BillingConfig(**options)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


