"""The price book: product -> meter -> USD per 1,000,000 units, and the one rating formula.

Rating lives here (and is called only by the ledger) so that the rounding rule is written once:
cost = sum(quantity * price_per_million) / 1,000,000, rounded once per event to 6 digits, half-even.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from billing.config_files import ConfigError, read_mapping
from billing.events import MICRO, InvalidEvent

MILLION = Decimal(1_000_000)


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
    if isinstance(value, float | bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: price must be a decimal string like \"0.20\", got {value!r}")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"{where}: {value!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise ConfigError(f"{where}: price must be zero or more, got {value!r}")
    return price


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
        parsed[str(product)] = {
            str(meter): _price(price, f"{source}: {product}.{meter}")
            for meter, price in meters.items()
        }
    return PriceBook(parsed)


def load_pricebook(path: str | Path | None = None) -> PriceBook:
    """The shipped default price book, or the one at ``path`` (JSON or YAML)."""
    if path is None:
        default = resources.files("billing").joinpath("pricebook.default.json")
        with resources.as_file(default) as default_path:
            return pricebook_from_mapping(read_mapping(default_path), "default price book")
    return pricebook_from_mapping(read_mapping(path), str(path))
