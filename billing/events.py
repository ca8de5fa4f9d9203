"""The canonical in-memory shape of every event, and its JSON form.

Every layer (JSON replay files, the Avro codec, the Faust worker, the ClickHouse sink) converts to
and from this one shape, so the ledger sees the same values whatever the transport:

- an event is a ``dict`` keyed by the contract's field names (section 4 and 6 of the billing rules);
- money is ``Decimal`` with exactly 6 fractional digits (micro-dollars), never a float;
- timestamps are timezone-aware UTC ``datetime`` at millisecond precision;
- ``quantities`` is ``dict[str, int]``; optional fields are present with value ``None``;
- an input event may carry ``ingested_at``: when the broker appended it (the record timestamp of a
  ``LogAppendTime`` topic), the reference clock of the acceptance window. The worker sets it from
  the record; a replay line may carry it (``billing export`` writes it); absent, the event counts as
  ingested at its own ``timestamp``.

Validation here is structural (types, required fields, non-negative numbers); whether an event
makes sense for an account (unknown product, unopened account, budget above the tier) is the
ledger's call.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

# Each event's fields and their kinds (the checks below; what a kind means: schemas/shapes.py),
# generated from the .avsc files, their one source; re-exported here, where the code imports them.
from billing.event_shapes import BATCH_TYPES as BATCH_TYPES
from billing.event_shapes import COMMON_FIELDS as COMMON_FIELDS
from billing.event_shapes import INPUT_DEFAULTS
from billing.event_shapes import INPUT_FIELDS as INPUT_FIELDS
from billing.event_shapes import OUTPUT_COMMON_FIELDS as OUTPUT_COMMON_FIELDS
from billing.event_shapes import OUTPUT_FIELDS as OUTPUT_FIELDS
from billing.event_shapes import RATED_USAGE_FIELDS as RATED_USAGE_FIELDS
from billing.event_shapes import SNAPSHOT_FIELDS as SNAPSHOT_FIELDS
from billing.event_shapes import TOPIC_OF_TYPE as TOPIC_OF_TYPE

MICRO = Decimal("0.000001")
# Every amount the contract carries is decimal(18, 6): below 10^12 in magnitude. A larger one could
# not be written into an output or a ClickHouse row, so it is refused where it enters.
MONEY_LIMIT = Decimal(10) ** 12
# Event times the billing accepts. Far outside them an event is a broken clock or a broken producer
# (and the month arithmetic ends at year 9999); inside, see billing/README.md on future times.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)
ZERO = Decimal("0.000000")
# The most units of one meter a usage event may report. One usage event is one request or one batch;
# a count above this is a broken producer (or an overflow upstream). The bound is also what lets the
# price book refuse, at load, a price that could make one event cost more than decimal(18, 6) holds.
MAX_QUANTITY = 10**12

OUTPUT_TYPES = tuple(OUTPUT_FIELDS)
MONEY_SNAPSHOT_FIELDS = tuple(name for name, kind in SNAPSHOT_FIELDS.items() if kind == "money")


class InvalidEvent(ValueError):
    """An input that cannot be processed; ``reason`` is what a person must fix."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# A number on the wire (billing rules section 1): ASCII, an optional "-", digits, at most one ".",
# at least one digit. Python's Decimal() and int() also take "0_90", " 5", "1e30", "NaN", "+5" and
# other scripts' digits ("\u0663", Arabic-Indic 3); none of them reaches Decimal() here.
_PLAIN_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII).fullmatch
_DECIMAL_EXAMPLE = 'a decimal string like "12.50"'


def _shown(value: Any) -> str:
    """``repr`` of a refused value, cut short: it is copied into dead letters and logs."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def parse_decimal(value: Any, field: str, *, signed: bool = True) -> Decimal:
    """The one parser for a number on the wire (an amount, a price): exact, never a float.

    Accepts a string of ASCII digits with at most one ``.`` and, if ``signed``, an optional leading
    ``-`` (``"12.5"``, ``"-3"``, ``"0.000001"``); a Python ``int`` (not ``bool``); a finite
    ``Decimal``. Refuses everything else, including what ``Decimal()`` would take: underscores,
    spaces, exponents, ``NaN``/``Infinity``, ``+``, non-ASCII digits, floats. A negative zero is
    returned as zero. Raises :class:`InvalidEvent` naming ``field``; the scale is the caller's.
    """
    if isinstance(value, str):
        if _PLAIN_DECIMAL(value) is None:
            raise InvalidEvent(f"{field}={_shown(value)} is not a decimal number: write "
                               f"{_DECIMAL_EXAMPLE} (ASCII digits, at most one '.'"
                               + (", an optional leading '-'" if signed else "")
                               + "; no spaces, underscores or exponents)", field)
        if value[0] != "-":
            return Decimal(value)
        if not signed:
            raise InvalidEvent(f"{field} must be zero or more, got {_shown(value)}", field)
        number = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidEvent(f"{field} must be a finite number, got {_shown(value)}", field)
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    else:
        kind = "the float " if isinstance(value, float) else ""
        raise InvalidEvent(f"{field} must be {_DECIMAL_EXAMPLE}, not {kind}{_shown(value)}",
                           field)
    if number.is_signed():
        if not number:
            return number.copy_abs()  # -0 -> 0: the same bytes in JSON as through Avro
        if not signed:
            raise InvalidEvent(f"{field} must be zero or more, got {_shown(value)}", field)
    return number


def to_money(value: Any, field: str = "amount") -> Decimal:
    """Exact decimal with 6 fractional digits, below 10^12 in magnitude (decimal(18, 6)).

    ``value`` is read by :func:`parse_decimal` (a plain decimal string, an int or a finite
    Decimal; a float is refused); more than 6 fractional digits are refused, not rounded.
    """
    amount = parse_decimal(value, field)
    if abs(amount) >= MONEY_LIMIT:
        raise InvalidEvent(f"{field}={_shown(value)} is too large: amounts must stay below "
                           "1,000,000,000,000 (decimal(18, 6))", field)
    quantized = amount.quantize(MICRO, rounding=ROUND_HALF_EVEN)
    if quantized != amount:
        raise InvalidEvent(f"{field}={_shown(value)} has more than 6 fractional digits", field)
    return quantized


# Fields a JSON input line may carry besides the event's own: ``ingested_at``, the broker's append
# time, which ``billing export`` writes and replay reads (section 4). A producer accepts it and does
# not send it: the broker stamps the real one.
ENVELOPE_FIELDS = frozenset({"ingested_at"})
_KNOWN_FIELDS = {event_type: frozenset(COMMON_FIELDS) | frozenset(fields) | ENVELOPE_FIELDS
                 for event_type, fields in INPUT_FIELDS.items()}


def unknown_fields(raw: Any) -> list[str]:
    """The keys of a raw input event that are no field of its type, in their order.

    Empty when ``raw`` is not a mapping or its type is unknown (:func:`normalize_input` says so).
    The pipeline ignores unknown fields, as an Avro reader does; a producer client refuses them,
    since ``{"request": 500}`` (for ``requests``) would otherwise be billed as 1 request.
    """
    if not isinstance(raw, dict):
        return []
    event_type = raw.get("type")
    known = _KNOWN_FIELDS.get(event_type) if isinstance(event_type, str) else None
    if known is None:
        return []
    return [name for name in raw if name not in known]


def unknown_fields_reason(raw: dict[str, Any], names: list[str]) -> str:
    """What to tell a producer about ``names`` (from :func:`unknown_fields`): each with the
    closest known field, e.g. "unknown field 'request' for usage; did you mean 'requests'?"."""
    event_type = raw["type"]
    known = sorted(_KNOWN_FIELDS[event_type] - ENVELOPE_FIELDS)
    parts = []
    for name in names:
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"its fields are {', '.join(known)}"
        parts.append(f"unknown field {name!r} for {event_type}; {hint}")
    return "; ".join(parts)


def parse_time(value: Any, field: str = "timestamp") -> datetime:
    """ISO-8601 (with Z or offset) or a datetime -> aware UTC datetime truncated to milliseconds."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"{field}={value!r} is not an ISO-8601 time like "
                               "2026-01-31T12:00:00.000Z", field) from None
    else:
        raise InvalidEvent(f"{field} must be an ISO-8601 string, got {value!r}", field)
    if moment.tzinfo is None:
        raise InvalidEvent(f"{field}={value!r} has no time zone; use UTC with a trailing Z", field)
    moment = moment.astimezone(UTC)
    if not EARLIEST_EVENT_TIME <= moment < LATEST_EVENT_TIME:
        raise InvalidEvent(f"{field}={value!r} is outside the years 1970 to 2099 that billing "
                           "accepts; check the producer's clock", field)
    if moment.microsecond % 1000:  # (most times are whole milliseconds already: no copy)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    return moment


def format_time(moment: datetime) -> str:
    """UTC, millisecond precision, trailing Z: 2026-01-31T12:00:00.000Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _check_period(value: Any, field: str) -> str:
    if not (isinstance(value, str) and len(value) == 7 and value[4] == "-"
            and value[:4].isdigit() and value[5:].isdigit() and 1 <= int(value[5:]) <= 12):
        raise InvalidEvent(f"{field} must be a month like 2026-01, got {value!r}", field)
    return value


def _check_str(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field} must be a non-empty string, got {value!r}", field)
    return value


def _check_money(field: str, value: Any) -> Decimal:
    amount = to_money(value, field)
    if amount < 0:
        raise InvalidEvent(f"{field} must be zero or more, got {amount}", field)
    return amount


def _check_positive_money(field: str, value: Any) -> Decimal:
    amount = to_money(value, field)
    if amount <= 0:
        raise InvalidEvent(f"{field} must be greater than zero, got {amount}", field)
    return amount


def _check_time(field: str, value: Any) -> datetime:
    return parse_time(value, field)


def _check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEvent(f"{field} must be true or false, got {value!r}", field)
    return value


def _check_requests(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"requests must be a whole number >= 0, got {value!r}", field)
    return value


def _check_quantities(field: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not value:
        raise InvalidEvent("quantities must be a non-empty map of meter -> count", field)
    for meter, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidEvent(f"quantities.{meter} must be a whole number, got {count!r}",
                               f"quantities.{meter}")
        if count < 0:
            raise InvalidEvent(f"quantities.{meter} is negative ({count}); usage "
                               "quantities must be >= 0", f"quantities.{meter}")
        if count > MAX_QUANTITY:
            raise InvalidEvent(f"quantities.{meter}={count:,} is more than one usage event may "
                               f"report ({MAX_QUANTITY:,}); report a request or a batch per "
                               "event", f"quantities.{meter}")
    return dict(value)


def _check_contract(field: str, value: Any) -> str:
    if value not in ("self_serve", "enterprise"):
        raise InvalidEvent(f"contract must be self_serve or enterprise, got {value!r}", field)
    return value


def _check_billing_model(field: str, value: Any) -> str:
    if value not in ("prepaid", "postpaid"):
        raise InvalidEvent(f"billing_model must be prepaid or postpaid, got {value!r}", field)
    return value


# Field kind (without the "?" of optional ones) -> its check: (field, non-null value) -> value.
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "str": _check_str,
    "money": _check_money,
    "money>0": _check_positive_money,
    "time": _check_time,
    "bool": _check_bool,
    "requests": _check_requests,
    "quantities": _check_quantities,
    "contract": _check_contract,
    "billing_model": _check_billing_model,
    "period": lambda field, value: _check_period(value, field),
}


def _normalize_field(kind: str, field: str, value: Any) -> Any:
    optional = kind.endswith("?")
    if value is None:
        if optional:
            return None
        raise InvalidEvent(f"missing required field {field!r}", field)
    check = _CHECKS.get(kind.rstrip("?"))
    if check is None:
        raise AssertionError(f"unknown field kind {kind}")
    return check(field, value)


# Event type -> (field, optional, check, default) for each of its own fields, worked out once:
# normalize_input runs for every input event.
_FIELD_CHECKS = {
    event_type: tuple((field, kind.endswith("?"), _CHECKS[kind.rstrip("?")],
                       INPUT_DEFAULTS.get(event_type, {}).get(field))
                      for field, kind in fields.items())
    for event_type, fields in INPUT_FIELDS.items()
}


DEFAULT_MAX_ID_BYTES = 256
# Free text an event may carry (a payment's failure reason, a receipt URL): longer is a broken
# producer, and it would be copied into every output that names it.
MAX_TEXT_BYTES = 4096
# Fields whose value is free text rather than an id.
TEXT_FIELDS = frozenset({"reason", "receipt_url"})


def _check_sizes(event: dict[str, Any], max_id_bytes: int) -> None:
    """Refuse an id (any string field but free text, meter names included) longer than
    ``max_id_bytes`` of UTF-8, and free text longer than :data:`MAX_TEXT_BYTES`: every id is
    copied into state, outputs and keys, where an oversized one would make them too large for
    Kafka (a 400 KB account id once crash-looped the worker)."""
    for field, value in event.items():
        if isinstance(value, str):
            limit = MAX_TEXT_BYTES if field in TEXT_FIELDS else max_id_bytes
            if len(value) * 4 > limit and len(value.encode()) > limit:  # UTF-8: <= 4 bytes/char
                raise InvalidEvent(f"{field} is {len(value.encode()):,} bytes of UTF-8; at most "
                                   f"{limit:,} are accepted", field)
    quantities = event.get("quantities")
    if quantities:
        for meter in quantities:
            if len(meter) * 4 > max_id_bytes and len(meter.encode()) > max_id_bytes:
                raise InvalidEvent(f"meter name is {len(meter.encode()):,} bytes of UTF-8; at "
                                   f"most {max_id_bytes:,} are accepted", "quantities")


def normalize_input(raw: dict[str, Any],
                    max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> dict[str, Any]:
    """Validate an input event's structure and return it in canonical form.

    Raises :class:`InvalidEvent` naming the first bad field. Unknown extra fields are ignored (so
    producers may add fields before the schema does, as Avro's reader would). Ids longer than
    ``max_id_bytes`` (UTF-8) are refused.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(raw).__name__}")
    event_type = raw.get("type")
    checks = _FIELD_CHECKS.get(event_type) if isinstance(event_type, str) else None
    if checks is None:
        raise InvalidEvent(f"unknown event type {event_type!r}; expected one of "
                           + ", ".join(sorted(INPUT_FIELDS)), "type")
    get = raw.get
    event: dict[str, Any] = {"type": event_type}
    for field in ("event_id", "timestamp"):
        value = get(field)
        if value is None:
            raise InvalidEvent(f"missing required field {field!r}", field)
        event[field] = _CHECKS[COMMON_FIELDS[field]](field, value)
    account_id = get("account_id")
    if event_type == "close_period" and account_id in (None, ""):
        event["account_id"] = ""
    elif account_id is None:
        raise InvalidEvent("missing required field 'account_id'", "account_id")
    else:
        event["account_id"] = _check_str("account_id", account_id)
    for field, optional, check, default in checks:
        value = get(field, default)
        if value is not None:
            event[field] = check(field, value)
        elif optional:
            event[field] = None
        else:
            raise InvalidEvent(f"missing required field {field!r}", field)
    ingested_at = get("ingested_at")
    if ingested_at is not None:
        event["ingested_at"] = parse_time(ingested_at, "ingested_at")
    _check_sizes(event, max_id_bytes)
    return event


# The most records one batch message (``usage_batch``) may pack. Also the scale of an input's
# position in an account record's status version (billing.account_record): never lower it.
MAX_BATCH_RECORDS = 500


def unpack_batch(raw: dict[str, Any],
                 max_id_bytes: int = DEFAULT_MAX_ID_BYTES) -> list[dict[str, Any] | InvalidEvent]:
    """The events a batch message (a type of :data:`BATCH_TYPES`) packs, in their order: each in
    canonical form (:func:`normalize_input`, with the batch's ``account_id``), or the
    :class:`InvalidEvent` that refuses that record alone, its reason naming the record's index
    and event_id (``field``: ``records[3].quantities.x``).

    Raises :class:`InvalidEvent` when the batch itself is bad: no ``account_id``, no records, or
    more than :data:`MAX_BATCH_RECORDS`.
    """
    batch_type = raw["type"]
    packed = BATCH_TYPES[batch_type]
    account_id = raw.get("account_id")
    if account_id is None:
        raise InvalidEvent("missing required field 'account_id'", "account_id")
    _check_sizes({"account_id": _check_str("account_id", account_id)}, max_id_bytes)
    records = raw.get("records")
    if not isinstance(records, list) or not records:
        raise InvalidEvent(f"records of a {batch_type} must be a non-empty list", "records")
    if len(records) > MAX_BATCH_RECORDS:
        raise InvalidEvent(f"a {batch_type} packs {len(records):,} records; at most "
                           f"{MAX_BATCH_RECORDS} are accepted", "records")
    events: list[dict[str, Any] | InvalidEvent] = []
    for index, record in enumerate(records):
        try:
            if not isinstance(record, dict):
                raise InvalidEvent(f"must be an object, got {type(record).__name__}")
            events.append(normalize_input({**record, "type": packed, "account_id": account_id},
                                          max_id_bytes))
        except InvalidEvent as error:
            event_id = record.get("event_id") if isinstance(record, dict) else None
            events.append(InvalidEvent(batch_record_reason(packed, index, event_id, error.reason),
                                       batch_record_field(index, error.field)))
    return events


_BATCH_OF_TYPE = {packed: batch_type for batch_type, packed in BATCH_TYPES.items()}


def batch_record_reason(event_type: str, index: int, event_id: Any, reason: str) -> str:
    """Why one record of a batch message is refused: which record (index, event_id), then why."""
    return f"{_BATCH_OF_TYPE[event_type]} record {index} (event_id {_shown(event_id)}): {reason}"


def batch_record_field(index: int, field: str | None) -> str:
    """The field at fault in a batch message: ``records[3].quantities.x`` (``records[3]``: the
    record as a whole)."""
    return f"records[{index}]" + (f".{field}" if field else "")


def _json_default(value: Any) -> Any:
    """What orjson cannot write itself: money as strings, times as ISO-8601 with Z."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date | time):  # orjson's own form for these, which it passes through too
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def to_jsonable(value: Any) -> Any:
    """Canonical form -> plain JSON values: money as strings, times as ISO-8601 with Z."""
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def dumps(event: dict[str, Any]) -> bytes:
    """One JSON line (without newline) for an event or snapshot in canonical form.

    Same bytes as ``orjson.dumps(to_jsonable(event))``, without copying the event in Python first:
    orjson hands only the money and the times (``OPT_PASSTHROUGH_DATETIME``) to ``_json_default``.
    """
    return orjson.dumps(event, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
