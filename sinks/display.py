"""Query results as text: aligned tables for a terminal, CSV and JSON lines for other programs.

Money is exact everywhere except where a person reads dollars: :func:`format_money` rounds a copy
to the cent (ROUND_HALF_EVEN) for display only, and totals are summed from the exact values before
they are formatted.

Both backends return the same values but not always the same ``Decimal`` exponent (the driver
gives ``Decimal('1.5')`` where chdb gives ``Decimal('1.500000')``); money is padded to 6 digits so
the output is the same whichever ClickHouse answered. Padding only adds zeros: a value with more
digits (``percent_used``) keeps them all.

Machine formats (:func:`format_csv`, :func:`format_json_lines`) never write a float: decimals (and
any float a hand-written query returns) are strings, times are ISO-8601 UTC with ``Z``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from billing.events import MICRO

CURRENCY_SYMBOL = "$"  # the contract's only currency is USD
CENT = Decimal("0.01")
# Wide enough for any ClickHouse decimal (Decimal256: 76 digits), so quantize never rounds or
# raises where the default context (28 digits) would.
WIDE = Context(prec=80, rounding=ROUND_HALF_EVEN)


def _padded(value: Decimal) -> Decimal:
    """The same number with at least 6 fractional digits (only adds zeros: exact)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > MICRO.as_tuple().exponent:
        return value.quantize(MICRO, context=WIDE)
    return value


def exact_decimal(value: Decimal) -> str:
    """A decimal for CSV and JSON: plain digits, at least 6 fractional ones, never rounded, never
    in exponent notation (``Decimal('0E-7')`` is ``0.0000000``, ``1E-12`` is ``0.000000000001``)."""
    return format(_padded(value), "f")


def format_money(value: Decimal) -> str:
    """Dollars for a person: ``$1,234.57``, ``-$0.50``. Rounds a copy to the cent, half to even;
    a value that rounds to zero shows as ``$0.00`` (use the exact value to see its sign)."""
    cents = value.quantize(CENT, rounding=ROUND_HALF_EVEN, context=WIDE)
    sign = "-" if cents < 0 else ""
    return f"{sign}{CURRENCY_SYMBOL}{cents.copy_abs():,.2f}"


def iso_time(value: datetime) -> str:
    """ISO-8601 in UTC with ``Z``: seconds, or milli/microseconds when the value has them."""
    value = value.astimezone(UTC).replace(tzinfo=None)
    micros = value.microsecond
    timespec = "seconds" if not micros else "milliseconds" if not micros % 1000 else "microseconds"
    return value.isoformat(timespec=timespec) + "Z"


def format_value(value: Any) -> str:
    """One cell: NULL, money with 6 decimals (never rounded), UTC times, lists comma-separated."""
    if value is None:
        return "NULL"
    if isinstance(value, Decimal):
        return str(_padded(value))
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def format_money_value(value: Any) -> str:
    """One cell where every decimal is money (the invoice): dollars to the cent."""
    return format_money(value) if isinstance(value, Decimal) else format_value(value)


def format_table(names: Sequence[str], rows: Sequence[Sequence[Any]],
                 cell: Callable[[Any], str] = format_value) -> str:
    """A header, a rule and one line per row; numbers right-aligned, the rest left-aligned.
    ``cell`` renders one value (default :func:`format_value`: exact)."""
    cells = [[cell(value) for value in row] for row in rows]
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


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of decimals (no rounding at the default context's 28 digits)."""
    total = Decimal(0)
    for value in values:
        total = WIDE.add(total, value)
    return total


def json_value(value: Any) -> Any:
    """A value as JSON sees it: decimals and floats as strings, times ISO-8601 with ``Z``,
    dates ``YYYY-MM-DD``, tuples as arrays, maps with string keys; never a JSON float."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return exact_decimal(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)  # UUID, IPv4Address, ...


def csv_value(value: Any) -> str:
    """One CSV field: empty for NULL, ``true``/``false``, arrays as JSON text, else as JSON."""
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    return str(value)


def format_csv(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180: a header line, one record per row, CRLF line ends, fields quoted when needed."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(names)
    writer.writerows([csv_value(value) for value in row] for row in rows)
    return buffer.getvalue()


def format_json_lines(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Iterator[str]:
    """One JSON object per row (JSON lines), keys in column order; no rows, no lines."""
    for row in rows:
        yield json.dumps({name: json_value(value) for name, value in zip(names, row, strict=True)},
                         ensure_ascii=False, allow_nan=False)
