"""The price book: product -> meter -> USD per 1,000,000 units, and the one rating formula.

Rating lives here (and is called only by the ledger) so that the rounding rule is written once:
cost = sum(quantity * price_per_million) / 1,000,000, rounded once per event to 6 digits, half-even.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from billing.config import ConfigError
from billing.events import MAX_QUANTITY, MICRO, MONEY_LIMIT, InvalidEvent, parse_decimal

MILLION = Decimal(1_000_000)
# Prices are per million units, so they may carry more digits than money ("0.0375"); 12 keep the
# cost of MAX_QUANTITY units exact at 6 digits, so its rounding can never reach MONEY_LIMIT.
MAX_PRICE_PLACES = 12
# One usage event's worst cost, sum(MAX_QUANTITY * price) / 1,000,000, must stay below MONEY_LIMIT
# (decimal(18, 6)): a product's prices must sum to less than this (10**6 with the defaults).
PRICE_SUM_LIMIT = MONEY_LIMIT * MILLION / MAX_QUANTITY


@dataclass(frozen=True)
class PriceBook:
    """Prices per million units. Immutable; load with :func:`load_pricebook`."""

    products: dict[str, dict[str, Decimal]]

    def rate(self, product: str, quantities: dict[str, int]) -> Decimal:
        """Cost of one usage event. Unknown product or meter raises :class:`InvalidEvent`.

        Usage is never free by accident: a meter the price book does not know is an error to fix
        (add the price, then re-drive the dead letter), not a zero.
        """
        prices = self.products.get(product)
        if prices is None:
            raise InvalidEvent(f"unknown product {product!r}: add it to the price book, then "
                               "re-drive this event", "product")
        total = Decimal(0)
        for meter, quantity in quantities.items():
            price = prices.get(meter)
            if price is None:
                raise InvalidEvent(f"unknown meter {meter!r} for product {product!r}: known "
                                   f"meters are {', '.join(sorted(prices))}",
                                   f"quantities.{meter}")
            total += price * quantity
        return (total / MILLION).quantize(MICRO, rounding=ROUND_HALF_EVEN)


def _price(value: Any, where: str) -> Decimal:
    """One price: a plain decimal string (or an int), >= 0, at most 12 fractional digits, and
    below :data:`PRICE_SUM_LIMIT` on its own (the product's sum is checked by the caller)."""
    try:
        price = parse_decimal(value, "price", signed=False)
    except InvalidEvent as error:
        raise ConfigError(f"{where}: {error.reason}") from None
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: parse_decimal refuses NaN and Infinity
    if -exponent > MAX_PRICE_PLACES:
        raise ConfigError(f"{where}: price {_short(repr(value))} has {-exponent} fractional "
                          f"digits; at most {MAX_PRICE_PLACES} are accepted")
    if price >= PRICE_SUM_LIMIT:
        raise ConfigError(f"{where}: price {_short(repr(value))} is too high: one usage event of "
                          f"{MAX_QUANTITY:,} units (the most an event may report) would cost "
                          f"{_worst(price)}, and costs must stay below 1,000,000,000,000 "
                          "(decimal(18, 6))")
    return price


def _worst(prices_sum: Decimal) -> str:
    """The cost of MAX_QUANTITY units of every meter, for a message (plain digits, grouped)."""
    return _short(f"{(prices_sum * MAX_QUANTITY / MILLION).normalize():,f}")


def _short(text: str) -> str:
    return text if len(text) <= 60 else f"{text[:57]}..."


def _check_worst_cost(prices: dict[str, Decimal], raw: dict[Any, Any], where: str) -> None:
    """Refuse a product whose prices together could make one event cost past decimal(18, 6)."""
    total = sum(prices.values(), Decimal(0))  # exact: every price is below 10**6, <= 12 places
    if total >= PRICE_SUM_LIMIT:
        shown = ", ".join(f"{meter}={_short(repr(price))}" for meter, price in raw.items())
        raise ConfigError(f"{where}: prices {shown} are too high together: one usage event of "
                          f"{MAX_QUANTITY:,} units of every meter (the most an event may report) "
                          f"would cost {_worst(total)}, and costs must stay below "
                          "1,000,000,000,000 (decimal(18, 6))")


def pricebook_from_mapping(data: dict[str, Any], source: str = "price book") -> PriceBook:
    """Validate a parsed price book (see section 2 of the billing rules)."""
    unknown = set(data) - {"currency", "products"}
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}; known: currency, products")
    if data.get("currency", "USD") != "USD":
        raise ConfigError(f"{source}: currency must be USD, got {data.get('currency')!r}")
    products = data.get("products")
    if not isinstance(products, dict) or not products:
        raise ConfigError(f"{source}: 'products' must be a non-empty mapping")
    parsed: dict[str, dict[str, Decimal]] = {}
    for product, meters in products.items():
        if not isinstance(meters, dict) or not meters:
            raise ConfigError(f"{source}: product {product!r} needs a mapping of meter -> price")
        prices = {str(meter): _price(price, f"{source}: {product}.{meter}")
                  for meter, price in meters.items()}
        _check_worst_cost(prices, meters, f"{source}: product {product}")
        parsed[str(product)] = prices
    return PriceBook(parsed)


