"""Speed of the Avro codec: the library choice, then the encode of the worker's outputs.

Every message of every topic passes through the codec at least twice (worker in, sink in), so its
per-message cost bounds the pipeline's throughput per core.

1. **Libraries** (``--events`` calls of two fixed events): the ``avro`` package against fastavro,
   same schema parsed once, same events; the ``schemas.codec`` row is the codec as shipped (its
   fast path for encoding, fastavro for decoding, its framing and type mapping).
2. **Worker outputs** (``--accounts``/``--workload-events``): what the worker encodes per input
   event (``streams/publish.py``: each output on ``billing.account-state``, each rated usage, an
   account-status record), taken from the ledger run over a generated workload. Each way of
   encoding them runs over the same messages, interleaved round by round, CPU time, median of
   ``--runs`` rounds; a ratio is the median of the per-round ratios to "before", the codec's encode
   as of c1d4323 (the money check, then fastavro). The alternatives measured beside the shipped
   fast path (``schemas/avro_writer.py``): a pre-pass turning Decimals into their Avro bytes so
   fastavro writes plain bytes; fastavro given the union branch's own record schema (the index
   written apart); fastavro alone, without the codec's money check. Every way's bytes are checked
   equal to fastavro's first. The decimal encodings the fast path keeps are dropped at the start
   of each round, so each round sees the stream as a worker would, once.

3. **Rated usage batches**: the worker writes a batch's rated usage as one ``RatedUsageBatch``
   message (issue 16); the same rated usage records encoded in batches of ``--batch-sizes``,
   against one message per event as 'before' wrote them, CPU time per rated event.

Run: ``python -m benchmarks.codec_bench [--events 2000] [--runs 7] [--workload-events 20000]``
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
from functools import cache
from typing import Any

import avro.io
import avro.schema
import fastavro

from benchmarks.replay_bench import pin_to_one_cpu
from billing.account_status import status_record
from billing.events import InvalidEvent, normalize_input
from billing.ledger import Ledger, snapshot
from billing.replay import Replay
from devkit.workload import generate
from runtime.rules_files import load_config, load_pricebook
from schemas import load_schema
from schemas.avro_writer import decimal_encodings
from schemas.codec import Codec, _check_money, record_name, topic_schema

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


def compare_libraries(events: int, runs: int) -> None:
    """Part 1: the avro package against fastavro and the codec, on two fixed events."""
    libraries = (("avro", avro_pair), ("fastavro", fastavro_pair), ("schemas.codec", codec_pair))
    print(f"median of {runs} runs x {events} calls, microseconds per message")
    print(f"{'event':<16}{'library':<15}{'encode':>9}{'decode':>9}")
    for kind, event in CASES:
        operations = {library: make(kind, event) for library, make in libraries}
        samples: dict[str, list[list[float]]] = {library: [[], []] for library in operations}
        for _ in range(runs):  # interleaved, so a busy machine slows every library alike
            for library, pair in operations.items():
                for index, operation in enumerate(pair):
                    samples[library][index].append(per_call_us(operation, events))
        medians = {library: [statistics.median(times) for times in pair]
                   for library, pair in samples.items()}
        for library, (encode_us, decode_us) in medians.items():
            print(f"{event['type']:<16}{library:<15}{encode_us:>9.1f}{decode_us:>9.1f}")
        ratios = [a / f for a, f in zip(medians["avro"], medians["fastavro"], strict=True)]
        print(f"{'':<16}{'avro/fastavro':<15}{ratios[0]:>8.1f}x{ratios[1]:>8.1f}x")


# --- part 2: the worker's outputs ----------------------------------------------------------------

WORKER_KINDS = ("account_state", "usage_rated", "account_status")


def worker_outputs(accounts: int, events: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(topic kind, message) in the order the worker encodes them for each input event: its
    outputs, its rated usage, then the account's status record (the worker sends one per account
    per batch; one per event here, a batch of one)."""
    replay = Replay(Ledger(load_config(), load_pricebook()))
    messages: list[tuple[str, dict[str, Any]]] = []
    for version, raw in enumerate(generate(accounts, events, seed), start=1):
        try:
            event = normalize_input(raw)
            outputs, rated = replay.apply(event)
        except InvalidEvent:
            continue
        messages += [("account_state", output) for output in outputs]
        if rated is not None:
            messages.append(("usage_rated", rated))
        state = replay.accounts.get(event["account_id"])
        if state is not None:
            messages.append(("account_status",
                             status_record(snapshot(state), event["timestamp"], version)))
    return messages


def encode_before(kind: str, event: dict[str, Any]) -> bytes:
    """``Codec.encode`` (no registry) as of c1d4323: the money check, then fastavro."""
    _check_money(event, kind)
    return fastavro_alone(kind, event)


def fastavro_alone(kind: str, event: dict[str, Any]) -> bytes:
    schema = topic_schema(kind)
    out = io.BytesIO()
    datum = (schema.branch(event), event) if schema.is_union else event
    fastavro.schemaless_writer(out, schema.parsed, datum)
    return out.getvalue()


def _money_bytes(value: Decimal) -> bytes:
    unscaled = int(str(value).replace(".", ""))  # 6 places: the canonical shape
    return unscaled.to_bytes((abs(unscaled).bit_length() + 8) // 8, "big", signed=True)


def _without_decimals(record: dict[str, Any]) -> dict[str, Any]:
    return {key: _money_bytes(value) if type(value) is Decimal
            else _without_decimals(value) if type(value) is dict else value
            for key, value in record.items()}


def prepass(kind: str, event: dict[str, Any]) -> bytes:
    """Alternative (b): Decimals turned into their Avro bytes first; fastavro writes bytes as
    they are where a decimal is expected."""
    _check_money(event, kind)
    return fastavro_alone(kind, _without_decimals(event))


@cache
def _branch_schemas(kind: str) -> dict[str, tuple[bytes, Any]]:
    parsed = topic_schema(kind).parsed
    return {branch["name"]: (bytes([index * 2]), branch) for index, branch in enumerate(parsed)}


def fastavro_by_branch(kind: str, event: dict[str, Any]) -> bytes:
    """Alternative (c): fastavro on the branch's own record schema, the union index written
    apart, so fastavro does not look the branch up among the topic's records."""
    schema = topic_schema(kind)
    _check_money(event, kind)
    if not schema.is_union:
        return fastavro_alone(kind, event)
    index, branch = _branch_schemas(kind)[schema.branch(event)]
    out = io.BytesIO(index)
    out.seek(len(index))
    fastavro.schemaless_writer(out, branch, event)
    return out.getvalue()


def compare_worker_encodes(messages: list[tuple[str, dict[str, Any]]], runs: int) -> None:
    """Part 2: every way of encoding the worker's outputs, per kind and for the whole stream."""
    codec = Codec()
    ways: dict[str, Callable[[str, dict[str, Any]], bytes]] = {
        "before": encode_before, "codec now": codec.encode, "pre-pass": prepass,
        "by branch": fastavro_by_branch, "fastavro": fastavro_alone}
    for kind, message in messages:
        expected = fastavro_alone(kind, message)
        for name, encode in ways.items():
            assert encode(kind, message) == expected, (name, kind, message)
    streams = {kind: [(k, m) for k, m in messages if k == kind] for kind in WORKER_KINDS}
    streams["all, in order"] = messages
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(runs):
        for stream, items in streams.items():
            for name, encode in ways.items():
                decimal_encodings(18, 6).clear()
                start = time.thread_time()
                for kind, message in items:
                    encode(kind, message)
                times.setdefault((stream, name), []).append(
                    (time.thread_time() - start) / len(items) * 1e6)
    print(f"\nworker outputs: CPU microseconds per message, median of {runs} rounds; "
          "x: median of per-round ratios to 'before'")
    print(f"{'messages':<16}{'count':>7}" + "".join(f"{name:>14}" for name in ways))
    for stream, items in streams.items():
        cells = []
        for name in ways:
            ratio = statistics.median(now / before for now, before in zip(
                times[stream, name], times[stream, "before"], strict=True))
            cells.append(f"{statistics.median(times[stream, name]):>7.2f} {ratio:>5.2f}x")
        print(f"{stream:<16}{len(items):>7}" + "".join(f"{cell:>14}" for cell in cells))


@cache
def _rated_record() -> Any:
    """The rated usage record alone: the topic's whole schema until session 12."""
    return fastavro.parse_schema(load_schema("usage_rated")[0])


def _one_rated_before(record: dict[str, Any]) -> bytes:
    """A rated usage message as c1d4323 encoded it: the money check, then fastavro on the
    one-record schema."""
    _check_money(record, "usage_rated")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _rated_record(), record)
    return out.getvalue()


def compare_rated_batches(messages: list[tuple[str, dict[str, Any]]], runs: int,
                          sizes: tuple[int, ...]) -> None:
    """Part 3: rated usage as the worker writes it since issue 16, one ``RatedUsageBatch`` per
    batch, against one message per event as 'before' wrote it; CPU µs per rated event."""
    codec = Codec()
    rated = [message for kind, message in messages if kind == "usage_rated"]
    batches = {size: [{"records": rated[start:start + size]}
                      for start in range(0, len(rated), size)] for size in sizes}
    for size, values in batches.items():  # the same bytes as fastavro's
        assert all(codec.encode("usage_rated", value) == fastavro_alone("usage_rated", value)
                   for value in values[:50]), size
    times: dict[str, list[float]] = {}
    ways: dict[str, Callable[[], object]] = {
        "before, one a message": lambda: [_one_rated_before(one) for one in rated],
        **{f"codec, batches of {size}": (lambda values=values: [
            codec.encode("usage_rated", value) for value in values])
           for size, values in batches.items()}}
    for _ in range(runs):
        for name, encode in ways.items():
            decimal_encodings(18, 6).clear()
            start = time.thread_time()
            encode()
            times.setdefault(name, []).append((time.thread_time() - start) / len(rated) * 1e6)
    print(f"\nrated usage ({len(rated)} events): CPU microseconds per event, median of {runs} "
          "rounds; x: median of per-round ratios to 'before'")
    for name in ways:
        ratio = statistics.median(now / before for now, before in zip(
            times[name], times["before, one a message"], strict=True))
        print(f"{name:<28}{statistics.median(times[name]):>8.2f} {ratio:>5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="calls per run (part 1)")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    parser.add_argument("--accounts", type=int, default=500, help="accounts (part 2)")
    parser.add_argument("--workload-events", type=int, default=20000,
                        help="input events whose outputs are encoded (part 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 5, 25, 250],
                        help="rated usage records per message (part 3)")
    args = parser.parse_args()
    print(pin_to_one_cpu())
    compare_libraries(args.events, args.runs)
    messages = worker_outputs(args.accounts, args.workload_events, args.seed)
    compare_worker_encodes(messages, args.runs)
    compare_rated_batches(messages, args.runs, tuple(args.batch_sizes))


if __name__ == "__main__":
    main()
