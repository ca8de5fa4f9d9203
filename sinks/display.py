"""Query results as text a person reads in a terminal: aligned columns, money to the micro-dollar.

Both backends return the same values but not always the same ``Decimal`` exponent (the driver
gives ``Decimal('1.5')`` where chdb gives ``Decimal('1.500000')``); printing pads money to 6
digits so the output is the same whichever ClickHouse answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from billing.events import MICRO


def format_value(value: Any) -> str:
    """One cell: NULL, money with 6 decimals (never rounded), UTC times, lists comma-separated."""
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent > MICRO.as_tuple().exponent:
            value = value.quantize(MICRO)  # only adds zeros: exact
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def format_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A header, a rule and one line per row; numbers right-aligned, the rest left-aligned."""
    cells = [[format_value(value) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[index]) for row in cells)])
              for index, name in enumerate(names)]
    numeric = [bool(rows) and all(isinstance(row[index], int | Decimal) and
                                  not isinstance(row[index], bool) for row in rows)
               for index in range(len(names))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.rjust(width) if right else value.ljust(width)
                         for value, width, right in zip(values, widths, numeric, strict=True)
                         ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''})"
    return "\n".join([line(names), rule, *(line(row) for row in cells), count])
