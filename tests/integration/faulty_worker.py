"""``billing worker`` whose price book raises on the product ``explode``: the poison test's event
that makes the rules fail. Since the strict checks at the door no real input is known to do that,
so the fault is injected here, in a test module, and never in the product."""

from __future__ import annotations

from typing import Any

from billing.pricebook import PriceBook
from commands.cli import main

_rate = PriceBook.rate


def _exploding_rate(self: PriceBook, product: str, quantities: dict[str, int]) -> Any:
    if product == "explode":
        raise ArithmeticError("injected fault: the price book exploded")
    return _rate(self, product, quantities)


PriceBook.rate = _exploding_rate  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
