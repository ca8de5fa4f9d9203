"""Builders shared by the sink tests, and checks that they match the contract's shapes.

- :func:`rated` / :func:`output_event` make one canonical record by hand, for tests about a column;
- :func:`ledger_run` runs the real ledger (``billing.replay``) over a seeded workload, so the
  tables are filled with what production would write: credits, invoices, tier changes and
  thousands of usage events over many accounts;
- :class:`FakeConsumer` is the part of a ``KafkaConsumer`` the sink uses, over in-memory
  partitions, with commits recorded and a restart that rewinds to the last commit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from kafka import TopicPartition
from kafka.errors import CommitFailedError

from billing.account_status import status_record
from billing.events import RATED_USAGE_FIELDS, SNAPSHOT_FIELDS, dumps, normalize_input
from billing.ledger import Ledger
from billing.replay import Replay
from devkit.workload import generate
from runtime.rules_files import load_config, load_pricebook
from sinks.clickhouse import ChdbWriter, ClickHouseWriter
from sinks.rows import (
    ACCOUNT_STATE_COLUMNS,
    ACCOUNT_STATE_TABLE,
    RATED_USAGE_COLUMNS,
    RATED_USAGE_TABLE,
    rows_for_account_state,
    rows_for_rated_usage,
)

T0 = datetime(2026, 1, 15, 12, 0, 0, 123_000, tzinfo=UTC)


def rated(number: int = 1, account_id: str = "acct-1", cost: str = "0.000123",
          **fields: Any) -> dict[str, Any]:
    """One rated usage record (``RATED_USAGE_FIELDS``); ``fields`` override the defaults."""
    record = {
        "event_id": f"usage-{number}", "account_id": account_id, "timestamp": T0,
        "product": "llama-v3p1-8b", "quantities": {"input_tokens": 100, "output_tokens": 515},
        "requests": 1, "cost": Decimal(cost), "billed_period": "2026-01", "late": False,
        "over_limit": False, "billing_model": "prepaid", "tier": "1",
    }
    return {**record, **fields}


def snapshot(account_id: str = "acct-1", **fields: Any) -> dict[str, Any]:
    """An account snapshot (``SNAPSHOT_FIELDS``); ``fields`` override the defaults."""
    values = {
        "account_id": account_id, "billing_model": "postpaid", "contract": "self_serve",
        "status": "active", "pause_reasons": [], "credit_balance": Decimal("1.000000"),
        "outstanding_balance": Decimal("0.000000"), "month_to_date_spend": Decimal("0.500000"),
        "open_period": "2026-01", "lifetime_spend": Decimal("2.500000"),
        "lifetime_credits_purchased": Decimal("0.000000"), "tier": "1",
        "monthly_budget": Decimal("50.000000"), "rpm_limit": 6000, "tpm_limit": 3_600_000,
        "has_payment_method": True,
        "auto_top_up": {"enabled": False, "minimum_balance": Decimal("0.000000"),
                        "top_up_amount": Decimal("0.000000")},
        "pending_top_up_request_id": None,
    }
    return {**values, **fields}


def output_event(number: int, event_type: str, account_id: str = "acct-1",
                 **fields: Any) -> dict[str, Any]:
    """One output event of ``event_type`` with its own ``fields`` and a default snapshot."""
    return {"event_id": f"out-{number}", "account_id": account_id,
            "timestamp": datetime(2026, 1, 31, 23, 0, 0, 5_000, tzinfo=UTC), "type": event_type,
            "cause_event_id": f"cause-{number}", "snapshot": snapshot(account_id), **fields}


class LedgerRun(NamedTuple):
    """What ``billing replay`` produces for a workload, in canonical form and as files hold it."""

    outputs: list[dict[str, Any]]
    rated: list[dict[str, Any]]
    snapshots_json: dict[str, Any]  # as --snapshots-out writes it: money as strings
    events_jsonl: bytes  # as --events-out writes it


@functools.cache
def ledger_run(accounts: int = 25, events: int = 2500, seed: int = 7) -> LedgerRun:
    """The shipped ledger over a seeded workload (cached: several tests read the same run)."""
    replay = Replay(Ledger(load_config(None), load_pricebook(None)))
    outputs: list[dict[str, Any]] = []
    rated_usage: list[dict[str, Any]] = []
    for raw in generate(accounts, events, seed):
        more, record = replay.apply(normalize_input(raw))
        outputs.extend(more)
        if record is not None:
            rated_usage.append(record)
    snapshots_json = {account_id: orjson.loads(dumps(value))
                      for account_id, value in replay.snapshots().items()}
    return LedgerRun(outputs, rated_usage, snapshots_json,
                     b"".join(dumps(event) + b"\n" for event in outputs))


def chdb_with_tables(path: Path) -> ChdbWriter:
    """An embedded writer on ``path`` with the DDL applied (close it: one chdb path at a time)."""
    writer = ChdbWriter(path)
    writer.apply_ddl()
    return writer


def store(writer: ClickHouseWriter, rated_usage: Iterable[dict[str, Any]] = (),
          outputs: Iterable[dict[str, Any]] = ()) -> None:
    """Insert canonical records as the sink would (without its dedup), in one block per table."""
    writer.insert(RATED_USAGE_TABLE, RATED_USAGE_COLUMNS, rows_for_rated_usage(rated_usage))
    writer.insert(ACCOUNT_STATE_TABLE, ACCOUNT_STATE_COLUMNS, rows_for_account_state(outputs))


class Message(NamedTuple):
    """The fields of a ``kafka.ConsumerRecord`` the sink reads."""

    topic: str
    partition: int
    offset: int
    value: Any


@dataclass
class FakeConsumer:
    """In-memory partitions; ``poll`` reads from positions, ``commit`` records offsets."""

    logs: dict[TopicPartition, list[Any]]
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    committed_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    reject_commits: int = 0  # CommitFailedError for this many commits (a rebalance happened)
    listener: Any = None
    closed: bool = False

    def subscribe(self, topics: Any = (), pattern: Any = None, listener: Any = None) -> None:
        self.listener = listener
        self.positions = {tp: self.committed_offsets.get(tp, 0) for tp in self.logs}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None
             ) -> dict[TopicPartition, list[Message]]:
        room = max_records or 500
        polled: dict[TopicPartition, list[Message]] = {}
        for tp, values in self.logs.items():
            start = self.positions[tp]
            taken = values[start:start + room]
            if taken:
                polled[tp] = [Message(tp.topic, tp.partition, start + index, value)
                              for index, value in enumerate(taken)]
                self.positions[tp] = start + len(taken)
                room -= len(taken)
            if not room:
                break
        return polled

    def commit(self, offsets: Any = None) -> None:
        if self.reject_commits:
            self.reject_commits -= 1
            raise CommitFailedError("the group rebalanced")
        plain = {tp: meta.offset for tp, meta in offsets.items()}
        self.commits.append(plain)
        self.committed_offsets.update(plain)

    def rebalance(self, from_last_commit: bool = False) -> None:
        """Partitions revoked and assigned again to this consumer. Like kafka-python 3, the
        positions of partitions it keeps stay where they were; ``from_last_commit``: they went
        through another member in between, so they restart from the last commit."""
        self.listener.on_partitions_revoked(set(self.logs))
        if from_last_commit:
            self.positions = {tp: self.committed_offsets.get(tp, 0) for tp in self.logs}
        self.listener.on_partitions_assigned(set(self.logs))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in partitions}

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def committed(self, partition: TopicPartition) -> int | None:
        return self.committed_offsets.get(partition)

    def close(self, autocommit: bool = True) -> None:
        self.closed = True


def test_hand_made_records_have_the_contract_fields() -> None:
    assert set(rated()) == set(RATED_USAGE_FIELDS)
    assert set(snapshot()) == set(SNAPSHOT_FIELDS)


def test_the_ledger_run_covers_what_the_tables_hold() -> None:
    run = ledger_run()
    types = {event["type"] for event in run.outputs}
    assert {"credits_applied", "invoice_issued", "tier_changed"} <= types
    assert len(run.rated) > 1000
    assert set(run.snapshots_json) >= {record["account_id"] for record in run.rated}


def status(account_id: str = "acct-1", version: int = 1, **fields: Any) -> dict[str, Any]:
    """An account-status record (:func:`billing.account_status.status_record` of a default
    snapshot); ``fields`` override the snapshot's fields (``may_send`` and ``blocked_reasons``
    follow its status)."""
    moment = datetime(2026, 1, 31, 23, 0, 0, 5_000, tzinfo=UTC) + timedelta(seconds=version)
    return status_record(snapshot(account_id, **fields), moment, version)
