"""Seeded bad input messages: what the pipeline must dead-letter, and never bill or crash on.

``generate_fuzz`` yields :class:`FuzzCase` messages ready to send to an input topic (topic kind,
key, value bytes) together with the defect category they carry. Every case is invalid by the
contract (``shared/billing-rules.md`` section 4, ``docs/contracts.md``): a reader may rely on each
one landing in the dead-letter topic. Used by the dead-letter fuzz test; equally suited to a
benchmark of the reject path or a manual soak (``generate_fuzz(1_000_000, seed, accounts, ...)``
interleaved with ``devkit.workload.generate`` traffic).

Values are bare Avro, as the pipeline reads them without a schema registry (the default); the
Confluent header appears only as a defect. Money with more than 6 fractional digits is not among
the defects: Avro's decimal(18, 6) cannot carry it (only the JSON path can, and
``normalize_input`` refuses it there).

Where a case lands in the stream matters for one thing only. The worker applies each partition's
events in event-time order, so a case that decodes (it is rejected later, by the key check or by
the ledger) waits in the merge buffer like a good event; placed in the stream before good events
with earlier times it would hold them back and change their order. Every case that is a
well-formed Avro record therefore carries its ``timestamp``: send it after the good events up to
that time and before the later ones. Cases without one never reach the merge and may go anywhere.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

import fastavro

from billing.events import INPUT_FIELDS, TOPIC_OF_TYPE, InvalidEvent
from billing.ledger import EPOCH, period_of, to_millis
from billing.pricebook import PriceBook
from runtime.rules_files import load_pricebook
from schemas import schema_text
from schemas.codec import INPUT_KINDS, MONEY_LIMIT, RECORD_OF_TYPE, Codec, CodecError, topic_schema

# Where a case is rejected: while decoding (codec or normalize_input), by the worker's check that
# the key is the account id, or by the ledger (it needs the account's state).
DECODE, KEY, LEDGER = "decode", "key", "ledger"


@dataclass(frozen=True)
class Category:
    """A kind of defect: where it is caught, the error raised, and words its reason contains."""

    description: str
    stage: str
    error: type[InvalidEvent]
    reason_words: tuple[str, ...]  # the reason contains one of these (case-insensitive)


CATEGORIES: dict[str, Category] = {
    "random_bytes": Category("random bytes of random length", DECODE, InvalidEvent,
                             ("not Avro", "must be", "missing", "unknown event type")),
    "empty_value": Category("an empty value", DECODE, CodecError, ("empty value",)),
    "tombstone": Category("a null value (tombstone)", DECODE, InvalidEvent, ("tombstone",)),
    "json_not_avro": Category("the event as JSON instead of Avro", DECODE, CodecError,
                              ("looks like JSON",)),
    "truncated_avro": Category("a valid message cut short", DECODE, CodecError, ("not Avro",)),
    "wrong_topic_record": Category("a valid record of another topic's schema", DECODE,
                                   InvalidEvent, ("not Avro", "must be", "missing")),
    "confluent_framed": Category("a Confluent header (unknown schema id) before the record",
                                 DECODE, InvalidEvent,
                                 ("Confluent", "not Avro", "must be", "missing")),
    "unknown_type": Category("a union branch the topic does not have", DECODE, CodecError,
                             ("schema",)),
    "timestamp_out_of_range": Category("an event time before year 1 or after year 9999",
                                       DECODE, CodecError, ("out of range", "too large")),
    "empty_id": Category("an empty event_id or account_id", DECODE, InvalidEvent,
                         ("event_id", "account_id")),
    "empty_required_field": Category("an empty required string (product, payment id, ...)",
                                     DECODE, InvalidEvent, ("non-empty string",)),
    "negative_quantity": Category("a negative token count or GPU seconds", DECODE,
                                  InvalidEvent, ("negative",)),
    "negative_requests": Category("a negative request count", DECODE, InvalidEvent,
                                  ("requests",)),
    "non_positive_amount": Category("a zero or negative purchase, payment or top-up amount",
                                    DECODE, InvalidEvent, ("greater than zero",)),
    "unknown_enum": Category("a contract or billing model that does not exist", DECODE,
                             InvalidEvent, ("contract must be", "billing_model must be")),
    "bad_period": Category("a close_period month that is not YYYY-MM", DECODE, InvalidEvent,
                           ("period must be a month",)),
    "key_mismatch": Category("a message key that is not the account id", KEY, InvalidEvent,
                             ("differs from account_id",)),
    "never_opened": Category("an event for an account never opened", LEDGER, InvalidEvent,
                             ("never opened",)),
    "unknown_product": Category("usage of a product not in the price book", LEDGER,
                                InvalidEvent, ("unknown product",)),
    "unknown_meter": Category("usage of a meter the product does not price", LEDGER,
                              InvalidEvent, ("unknown meter",)),
    # Money the contract cannot represent (decimal(18, 6)).
    "cost_beyond_money_range": Category(
        "token counts whose cost exceeds decimal(18, 6) (>= $10**12): above MAX_QUANTITY",
        DECODE, InvalidEvent, ("may report",)),
    "amount_beyond_money_range": Category(
        "an amount with more than 18 digits (decimal(18, 6) overflow)", DECODE, InvalidEvent,
        ("decimal(18, 6)", "precision")),
}
DEFAULT_CATEGORIES = tuple(CATEGORIES)

FIRST_MS, LAST_MS = -62_135_596_800_000, 253_402_300_799_999  # 0001-01-01 .. 9999-12-31, UTC
UNKNOWN_PRODUCT, UNKNOWN_METER = "fuzz-model-404", "fuzz_tokens"
BAD_CONTRACTS = ("selfserve", "Enterprise", "free", "self-serve")
BAD_MODELS = ("pre-paid", "Postpaid", "free", "credit")
BAD_PERIODS = ("2026-13", "2026-00", "26-01", "2026/01", "2026-1", "", "January")


@dataclass(frozen=True)
class FuzzCase:
    """One bad message for an input topic, and what is wrong with it."""

    kind: str  # input topic kind: usage, payments, accounts or control
    key: bytes | None
    value: bytes | None  # None: a tombstone
    category: str
    timestamp: datetime | None = None  # event time of a well-formed record (see above)


def generate_fuzz(count: int, seed: int, accounts: Sequence[str], start: datetime,
                  end: datetime, *, categories: Sequence[str] = DEFAULT_CATEGORIES,
                  pricebook: PriceBook | None = None) -> Iterator[FuzzCase]:
    """``count`` bad messages, cycling through ``categories`` (every one present once
    ``count >= len(categories)``); the same arguments give the same messages.

    ``accounts`` are opened accounts of the good traffic, open before ``start``: the cases the
    ledger rejects for them (unknown product or meter) need their state. Cases whose defect does
    not depend on the account use ids no good traffic uses (``fuzz-ghost-...``), so that even an
    accidental well-formed decode is refused as an account never opened, never billed.
    Event times are drawn from ``[start, end)``.
    """
    unknown = [name for name in categories if name not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"unknown categories {unknown}; expected some of {', '.join(CATEGORIES)}")
    if not accounts:
        raise ValueError("accounts must name at least one opened account")
    if to_millis(end) <= to_millis(start):
        raise ValueError(f"empty time window {start} .. {end}")
    fuzzer = _Fuzzer(random.Random(f"fuzz-{seed}"), seed, list(accounts), start, end,
                     pricebook or load_pricebook())
    for number in range(count):
        yield fuzzer.case(categories[number % len(categories)], number)


class _Fuzzer:
    """Builds one case at a time; all randomness comes from ``rand``."""

    def __init__(self, rand: random.Random, seed: int, accounts: list[str], start: datetime,
                 end: datetime, pricebook: PriceBook) -> None:
        self.rand, self.seed, self.accounts, self.pricebook = rand, seed, accounts, pricebook
        self.start_ms, self.span_ms = to_millis(start), to_millis(end) - to_millis(start)
        self.codec = Codec()
        self.products = sorted(pricebook.products)
        self.number = 0

    def case(self, category: str, number: int) -> FuzzCase:
        self.number = number
        return getattr(self, f"_{category}")(category)

    # -- building blocks -------------------------------------------------------------------

    def _ghost(self) -> str:
        return f"fuzz-ghost-{self.seed}-{self.number}"

    def _time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.start_ms + self.rand.randrange(self.span_ms))

    def _event(self, event_type: str, account: str) -> dict[str, Any]:
        """A valid event of ``event_type`` (the start of every defect that is not in the bytes)."""
        rand, number = self.rand, self.number
        timestamp = self._time()
        event: dict[str, Any] = {"type": event_type, "event_id": f"fuzz-{self.seed}-{number}",
                                 "account_id": account, "timestamp": timestamp}
        for field, kind in INPUT_FIELDS[event_type].items():
            optional = kind.endswith("?")
            if optional and rand.random() < 0.5:
                event[field] = None
            elif kind.startswith("money"):
                event[field] = Decimal(rand.randrange(1, 500_000_000)).scaleb(-6)
            elif kind == "time":
                event[field] = timestamp
            elif kind == "bool":
                event[field] = rand.random() < 0.5
            elif kind == "contract":
                event[field] = rand.choice(("self_serve", "enterprise"))
            elif kind == "billing_model?":
                event[field] = rand.choice(("prepaid", "postpaid"))
            elif kind == "period":
                event[field] = period_of(timestamp)
            elif kind == "requests":
                event[field] = rand.randrange(1, 20)
            elif kind == "str" or optional:
                event[field] = f"{field}-{number}"
        if event_type == "usage":
            event["product"] = product = rand.choice(self.products)
            event["quantities"] = {meter: rand.randrange(1, 100_000)
                                   for meter in sorted(self.pricebook.products[product])}
        return event

    def _any_event(self, account: str, kind: str | None = None) -> dict[str, Any]:
        types = [event_type for event_type, topic in TOPIC_OF_TYPE.items()
                 if kind is None or topic == kind]
        return self._event(self.rand.choice(types), account)

    def _send(self, category: str, event: dict[str, Any], key: str | None = None,
              value: bytes | None = None) -> FuzzCase:
        """The case for ``event``: encoded unless ``value`` is given, keyed by ``key`` (default:
        its account)."""
        kind = TOPIC_OF_TYPE[event["type"]]
        if value is None:
            value = self.codec.encode(kind, event)
        key = event["account_id"] if key is None else key
        return FuzzCase(kind, key.encode(), value, category, event["timestamp"])

    def _bytes_case(self, category: str, kind: str, value: bytes | None) -> FuzzCase:
        return FuzzCase(kind, self._ghost().encode(), value, category)

    # -- malformed bytes -------------------------------------------------------------------

    def _random_bytes(self, category: str) -> FuzzCase:
        data = self.rand.randbytes(self.rand.randrange(1, 257))
        return self._bytes_case(category, self.rand.choice(INPUT_KINDS), data)

    def _empty_value(self, category: str) -> FuzzCase:
        return self._bytes_case(category, self.rand.choice(INPUT_KINDS), b"")

    def _tombstone(self, category: str) -> FuzzCase:
        return self._bytes_case(category, self.rand.choice(INPUT_KINDS), None)

    def _json_not_avro(self, category: str) -> FuzzCase:
        event = self._any_event(self._ghost())
        text = json.dumps(event, default=str).encode()
        return self._bytes_case(category, TOPIC_OF_TYPE[event["type"]], text)

    def _truncated_avro(self, category: str) -> FuzzCase:
        event = self._any_event(self._ghost())
        kind = TOPIC_OF_TYPE[event["type"]]
        data = self.codec.encode(kind, event)
        return self._bytes_case(category, kind, data[:self.rand.randrange(1, len(data))])

    def _wrong_topic_record(self, category: str) -> FuzzCase:
        event = self._any_event(self._ghost())
        own = TOPIC_OF_TYPE[event["type"]]
        data = self.codec.encode(own, event)
        target = self.rand.choice([kind for kind in INPUT_KINDS if kind != own])
        return self._bytes_case(category, target, data)

    def _confluent_framed(self, category: str) -> FuzzCase:
        event = self._any_event(self._ghost())
        kind = TOPIC_OF_TYPE[event["type"]]
        header = b"\x00" + self.rand.randrange(1, 1 << 20).to_bytes(4, "big")
        return self._bytes_case(category, kind, header + self.codec.encode(kind, event))

    def _unknown_type(self, category: str) -> FuzzCase:
        kind = self.rand.choice([kind for kind in INPUT_KINDS if topic_schema(kind).is_union])
        branches = len(topic_schema(kind).records)
        index = self.rand.randrange(branches, branches + 60)
        data = _zigzag(index) + self.codec.encode(kind, self._any_event(self._ghost(), kind))[1:]
        return self._bytes_case(category, kind, data)

    def _timestamp_out_of_range(self, category: str) -> FuzzCase:
        event = self._any_event(self._ghost())
        millis = (LAST_MS + self.rand.randrange(1, 10**15) if self.rand.random() < 0.5
                  else FIRST_MS - self.rand.randrange(1, 10**15))
        field = "created_at" if event["type"] == "account_opened" and self.rand.random() < 0.5 \
            else "timestamp"
        event[field] = millis  # fastavro writes a plain long for timestamp-millis
        return self._bytes_case(category, TOPIC_OF_TYPE[event["type"]],
                                self.codec.encode(TOPIC_OF_TYPE[event["type"]], event))

    # -- valid Avro, invalid by the contract -----------------------------------------------

    def _empty_id(self, category: str) -> FuzzCase:
        field = self.rand.choice(("event_id", "account_id"))
        # An empty account_id is a broadcast on the control topic, which is valid there.
        kinds = ("usage", "payments", "accounts") if field == "account_id" else None
        event = self._any_event(self.rand.choice(self.accounts),
                                self.rand.choice(kinds) if kinds else None)
        key = event["account_id"]
        event[field] = ""
        return self._send(category, event, key=key)

    def _empty_required_field(self, category: str) -> FuzzCase:
        candidates = [(event_type, field) for event_type, fields in INPUT_FIELDS.items()
                      for field, kind in fields.items() if kind == "str"]
        event_type, field = self.rand.choice(candidates)
        event = self._event(event_type, self.rand.choice(self.accounts))
        event[field] = ""
        return self._send(category, event)

    def _negative_quantity(self, category: str) -> FuzzCase:
        event = self._event("usage", self.rand.choice(self.accounts))
        meter = self.rand.choice(sorted(event["quantities"]))
        event["quantities"][meter] = -self.rand.choice((1, self.rand.randrange(1, 1 << 62)))
        return self._send(category, event)

    def _negative_requests(self, category: str) -> FuzzCase:
        event = self._event("usage", self.rand.choice(self.accounts))
        event["requests"] = -self.rand.choice((1, self.rand.randrange(1, 1 << 62)))
        return self._send(category, event)

    def _non_positive_amount(self, category: str) -> FuzzCase:
        candidates = [(event_type, field) for event_type, fields in INPUT_FIELDS.items()
                      for field, kind in fields.items() if kind == "money>0"]
        event_type, field = self.rand.choice(candidates)
        event = self._event(event_type, self.rand.choice(self.accounts))
        event[field] = Decimal(-self.rand.choice((0, 1, self.rand.randrange(1, 10**17)))).scaleb(-6)
        return self._send(category, event)

    def _unknown_enum(self, category: str) -> FuzzCase:
        event = self._event("account_opened", self.rand.choice(self.accounts))
        if self.rand.random() < 0.5:
            event["contract"] = self.rand.choice(BAD_CONTRACTS)
        else:
            event["billing_model"] = self.rand.choice(BAD_MODELS)
        return self._send(category, event)

    def _bad_period(self, category: str) -> FuzzCase:
        event = self._event("close_period", self.rand.choice(self.accounts))
        event["period"] = self.rand.choice(BAD_PERIODS)
        return self._send(category, event)

    def _key_mismatch(self, category: str) -> FuzzCase:
        event = self._any_event(self.rand.choice(self.accounts))
        key = self.rand.choice((f"{event['account_id']}-x".encode(), self._ghost().encode(), None))
        return replace(self._send(category, event), key=key)

    def _never_opened(self, category: str) -> FuzzCase:
        types = [event_type for event_type in TOPIC_OF_TYPE if event_type != "account_opened"]
        return self._send(category, self._event(self.rand.choice(types), self._ghost()))

    def _unknown_product(self, category: str) -> FuzzCase:
        event = self._event("usage", self.rand.choice(self.accounts))
        event["product"] = self.rand.choice((UNKNOWN_PRODUCT, event["product"].upper(),
                                             event["product"] + " "))
        return self._send(category, event)

    def _unknown_meter(self, category: str) -> FuzzCase:
        event = self._event("usage", self.rand.choice(self.accounts))
        other = {meter for prices in self.pricebook.products.values() for meter in prices}
        own = self.pricebook.products[event["product"]]
        event["quantities"][self.rand.choice([*sorted(other - set(own)), UNKNOWN_METER])] = 1
        return self._send(category, event)

    # -- money beyond decimal(18, 6) ----------------------------------------------------------

    def _cost_beyond_money_range(self, category: str) -> FuzzCase:
        event = self._event("usage", self.rand.choice(self.accounts))
        prices = self.pricebook.products[event["product"]]
        meter = max(sorted(prices), key=prices.__getitem__)
        event["quantities"] = {meter: int(MONEY_LIMIT * 1_000_000 / prices[meter]) + 1
                               + self.rand.randrange(1 << 40)}
        return self._send(category, event)

    def _amount_beyond_money_range(self, category: str) -> FuzzCase:
        candidates = [(event_type, field) for event_type, fields in INPUT_FIELDS.items()
                      for field, kind in fields.items() if kind == "money>0"]
        event_type, field = self.rand.choice(candidates)
        event = self._event(event_type, self.rand.choice(self.accounts))
        event[field] = MONEY_LIMIT + Decimal(self.rand.randrange(1 << 40)).scaleb(-6)
        kind = TOPIC_OF_TYPE[event_type]
        # Our codec refuses to write it; a producer with a wider schema (or a bug) can.
        out = io.BytesIO()
        fastavro.schemaless_writer(out, _wide_schema(kind), (RECORD_OF_TYPE[event_type], event))
        return self._send(category, event, value=out.getvalue())


def _zigzag(number: int) -> bytes:
    """Avro's varint encoding of a (small, non-negative) int, e.g. a union branch index."""
    encoded, value = bytearray(), number << 1
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


@cache
def _wide_schema(kind: str) -> Any:
    """A topic's schema with decimal precision 38: writes amounts decimal(18, 6) cannot hold."""
    return fastavro.parse_schema(json.loads(schema_text(kind).replace('"precision":18',
                                                                      '"precision":38')))
