"""Encode/decode speed of the two Avro libraries on realistic billing events, to choose one.

Every message of every topic passes through the codec at least twice (worker in, sink in), so its
per-message cost bounds the pipeline's throughput per core. Both libraries get the same schema,
parsed once, and the same events; the ``schemas.codec`` row is the codec as shipped (fastavro plus
its framing and type mapping), to show what the wrapper costs.

Run: ``python benchmarks/codec_bench.py [--events 2000] [--runs 7]``
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import avro.io
import avro.schema
import fastavro

from schemas import load_schema
from schemas.codec import Codec, record_name, topic_schema

NOW = datetime(2026, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
USAGE: dict[str, Any] = {
    "type": "usage",
    "event_id": "gw-7f3c2a9e-0b1d-4c55-9a5e-3f1e2d4c6b7a",
    "account_id": "acct-000123",
    "timestamp": NOW,
    "product": "deepseek-v3",
    "quantities": {"input_tokens": 1843, "cached_input_tokens": 512, "output_tokens": 377},
    "requests": 1,
}
SNAPSHOT: dict[str, Any] = {
    "account_id": "acct-000123",
    "billing_model": "prepaid",
    "contract": "self_serve",
    "status": "active",
    "pause_reasons": [],
    "credit_balance": Decimal("42.118731"),
    "outstanding_balance": Decimal("0.000000"),
    "month_to_date_spend": Decimal("7.881269"),
    "open_period": "2026-01",
    "lifetime_spend": Decimal("57.881269"),
    "lifetime_credits_purchased": Decimal("100.000000"),
    "tier": "2",
    "monthly_budget": Decimal("500.000000"),
    "rpm_limit": 6000,
    "tpm_limit": 7200000,
    "has_payment_method": True,
    "auto_top_up": {
        "enabled": True,
        "minimum_balance": Decimal("10.000000"),
        "top_up_amount": Decimal("50.000000"),
    },
    "pending_top_up_request_id": None,
}
CREDITS_APPLIED: dict[str, Any] = {
    "type": "credits_applied",
    "event_id": "out-credits_applied-pay-991",
    "account_id": "acct-000123",
    "timestamp": NOW,
    "cause_event_id": "pay-991",
    "amount": Decimal("50.000000"),
    "payment_id": "pay-991",
    "invoice_id": None,
    "receipt_url": "https://pay.example.com/r/991",
    "applied_to_outstanding": Decimal("0.000000"),
    "applied_to_credit": Decimal("50.000000"),
    "snapshot": SNAPSHOT,
}
CASES = (("usage", USAGE), ("account_state", CREDITS_APPLIED))


def fastavro_pair(kind: str, event: dict[str, Any]) -> tuple[Callable[[], bytes], Callable]:
    schema = topic_schema(kind)
    datum = (record_name(event["type"]), event) if schema.is_union else event

    def encode() -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema.parsed, datum)
        return out.getvalue()

    data = encode()
    return encode, lambda: fastavro.schemaless_reader(io.BytesIO(data), schema.parsed)


def avro_pair(kind: str, event: dict[str, Any]) -> tuple[Callable[[], bytes], Callable]:
    # The avro package picks a union branch by shape, not by name (fine for these two events,
    # wrong for types with identical fields, usage_paused/usage_resumed), and refuses extra keys.
    schema = avro.schema.parse(json.dumps(load_schema(kind)))
    writer, reader = avro.io.DatumWriter(schema), avro.io.DatumReader(schema, schema)
    record = {key: value for key, value in event.items() if key != "type"}

    def encode() -> bytes:
        out = io.BytesIO()
        writer.write(record, avro.io.BinaryEncoder(out))
        return out.getvalue()

    data = encode()
    return encode, lambda: reader.read(avro.io.BinaryDecoder(io.BytesIO(data)))


def codec_pair(kind: str, event: dict[str, Any]) -> tuple[Callable[[], bytes], Callable]:
    codec = Codec()
    data = codec.encode(kind, event)
    return (lambda: codec.encode(kind, event)), (lambda: codec.decode(kind, data))


def per_call_us(operation: Callable[[], Any], calls: int) -> float:
    """Mean time of one call over ``calls`` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(calls):
        operation()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="calls per run")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    args = parser.parse_args()
    libraries = (("avro", avro_pair), ("fastavro", fastavro_pair), ("schemas.codec", codec_pair))
    print(f"median of {args.runs} runs x {args.events} calls, microseconds per message")
    print(f"{'event':<16}{'library':<15}{'encode':>9}{'decode':>9}")
    for kind, event in CASES:
        operations = {library: make(kind, event) for library, make in libraries}
        samples: dict[str, list[list[float]]] = {library: [[], []] for library in operations}
        for _ in range(args.runs):  # interleaved, so a busy machine slows every library alike
            for library, pair in operations.items():
                for index, operation in enumerate(pair):
                    samples[library][index].append(per_call_us(operation, args.events))
        medians = {library: [statistics.median(times) for times in pair]
                   for library, pair in samples.items()}
        for library, (encode_us, decode_us) in medians.items():
            print(f"{event['type']:<16}{library:<15}{encode_us:>9.1f}{decode_us:>9.1f}")
        ratios = [a / f for a, f in zip(medians["avro"], medians["fastavro"], strict=True)]
        print(f"{'':<16}{'avro/fastavro':<15}{ratios[0]:>8.1f}x{ratios[1]:>8.1f}x")


if __name__ == "__main__":
    main()
