"""The gateway client on the real broker: a gateway that starts after 10,000 accounts exist knows
every account's state, equal to ``billing replay``'s; one started while the worker runs catches up
and follows to the final state; the status topic is compacted; an account that spends its credit
is refused by the example gateway, live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input
from devkit.workload import generate
from examples.gateway import Gateway
from runtime.account_status import AccountStatusClient, Progress
from runtime.observe import wait_until
from runtime.settings import Settings
from runtime.topics import CLEANUP_POLICY, describe_topic_configs
from tests.integration.pipeline import (
    WorkerProcess,
    in_merge_order,
    isolated,
    publish,
    replay_of,
)

pytestmark = pytest.mark.integration

# 40,000 events is about the fewest the generator makes for 10,000 accounts (their settings
# alone take ~25,000): ~11,000 usage, and at the end ~900 accounts paused, ~800 suspended.
ACCOUNTS, EVENTS = 10_000, 40_000


def workload(accounts: int, events: int, seed: int) -> list[dict[str, Any]]:
    return in_merge_order([normalize_input(event) for event in generate(
        accounts=accounts, events=events, seed=seed, start=datetime(2026, 1, 1, tzinfo=UTC))])


def differences(statuses: AccountStatusClient, snapshots: dict[str, dict[str, Any]]) -> list[str]:
    """Accounts whose status the client holds differs from the replay snapshot (or whose
    decision disagrees with it), and accounts the client holds that replay does not know."""
    wrong = []
    for account_id, snapshot in snapshots.items():
        status = statuses.status(account_id)
        if status is None or {key: status[key] for key in snapshot} != snapshot:
            wrong.append(account_id)
            continue
        decision = statuses.may_send(account_id)
        blocked = [*snapshot["pause_reasons"],
                   *(["suspended"] if snapshot["status"] == "suspended" else [])]
        if (decision.allowed != (snapshot["status"] == "active")
                or decision.reason != (",".join(sorted(blocked)) or "active")
                or decision.rpm_limit != snapshot["rpm_limit"]
                or decision.tpm_limit != snapshot["tpm_limit"]
                or decision.credit_balance != snapshot["credit_balance"]
                or decision.version != status["version"]
                or decision.updated_at != status["updated_at"]):
            wrong.append(account_id)
    return wrong + sorted(set(statuses.account_ids()) - set(snapshots))


def test_a_gateway_started_after_10000_accounts_knows_every_account(stack: Settings,
                                                                     tmp_path: Path) -> None:
    events = workload(ACCOUNTS, EVENTS, seed=23)
    snapshots, _ = replay_of(events)
    assert len(snapshots) == ACCOUNTS
    settings, app_id = isolated(stack, "status-after")
    publish(settings, events)
    WorkerProcess(settings, app_id, tmp_path / "worker.log").run_to_end(timeout=900)

    progresses: list[Progress] = []
    with AccountStatusClient(settings, on_progress=progresses.append) as statuses:
        assert statuses.wait_ready(120), statuses.progress
        assert statuses.lag() == 0 and len(statuses) == ACCOUNTS
        wrong = differences(statuses, snapshots)
        assert not wrong, (f"{len(wrong)} accounts differ, e.g. {wrong[0]}: client "
                           f"{statuses.status(wrong[0])} replay {snapshots.get(wrong[0])}")
        final = statuses.progress
    assert progresses[-1].ready and final.accounts == ACCOUNTS
    assert final.records_read >= ACCOUNTS and final.offsets_read == final.offsets_total
    refused = {decision.reason for decision in
               (statuses.may_send(account_id) for account_id in snapshots)
               if not decision.allowed}
    assert {"credits_exhausted", "suspended"} <= refused  # the workload covers both
    assert statuses.may_send("never-opened").reason == "unknown"


def test_a_gateway_started_mid_stream_catches_up_and_follows(stack: Settings,
                                                             tmp_path: Path) -> None:
    events = workload(2_000, 12_000, seed=29)
    snapshots, _ = replay_of(events)
    settings, app_id = isolated(stack, "status-mid")
    half = len(events) // 2
    publish(settings, events[:half])
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").start()
    try:
        # Started while the worker works through the first half...
        wait_until(lambda: worker.lag_reached(half - 1), timeout=300, interval=0.2,
                   what="the worker to start on the first half")
        with AccountStatusClient(settings) as statuses:
            assert statuses.wait_ready(120), statuses.progress
            # ... and the second half arrives after it is ready: it must follow. One by one:
            # the worker applies live input in the order Kafka appends it, and a batching
            # producer appends one topic's later events before another's earlier ones (seen
            # under CPU load: an auto top-up applied before the payment method it needs).
            publish(settings, events[half:], one_by_one=True)
            worker.wait_drained(timeout=600)
            wait_until(lambda: statuses.lag() == 0 and not differences(statuses, snapshots),
                       timeout=60, interval=1.0, what="the client to reach the final state")
            assert statuses.last_applied_at is not None
            assert statuses.last_updated_at is not None
            assert statuses.last_updated_at >= events[half]["timestamp"]
    finally:
        worker.stop()


def test_the_status_topic_is_compacted(stack: Settings) -> None:
    settings, _ = isolated(stack, "status-compact")
    topics = [stack.topics.account_status, settings.topics.account_status]
    configs = describe_topic_configs(stack, topics)
    assert {topic: configs[topic][CLEANUP_POLICY] for topic in topics} == \
        dict.fromkeys(topics, "compact")


def test_an_account_that_spends_its_credit_is_refused_by_the_gateway(stack: Settings,
                                                                     tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "status-gateway")
    now = datetime.now(UTC).replace(microsecond=0)
    opened = now - timedelta(minutes=10)
    setup = [normalize_input(event) for event in (
        {"type": "account_opened", "event_id": "open-A", "account_id": "A",
         "timestamp": opened, "created_at": opened, "contract": "self_serve"},
        {"type": "payment_method_added", "event_id": "pm-A", "account_id": "A",
         "timestamp": opened + timedelta(seconds=1), "payment_method_id": "pm-A"})]
    # $1.80 at $0.90 per million output tokens: more than the $1.00 free credit.
    spend = normalize_input({"type": "usage", "event_id": "use-A", "account_id": "A",
                             "timestamp": now - timedelta(minutes=5), "product": "deepseek-v3",
                             "quantities": {"output_tokens": 2_000_000}})
    worker = WorkerProcess(settings, app_id, tmp_path / "worker.log").start()
    try:
        with AccountStatusClient(settings) as statuses:
            assert statuses.wait_ready(60)
            gateway = Gateway(statuses)
            assert gateway.admit("A").reason == "unknown"
            publish(settings, setup, one_by_one=True)  # the account exists before its method
            wait_until(lambda: statuses.may_send("A").allowed, timeout=120, interval=0.2,
                       what="the client to see the new account")
            served = gateway.admit("A")
            assert served.allowed and served.decision.credit_balance == Decimal("1.000000")
            publish(settings, [spend])
            wait_until(lambda: not statuses.may_send("A").allowed, timeout=120, interval=0.2,
                       what="the client to see the account paused")
            answer = gateway.admit("A")
            assert answer.reason == "credits_exhausted"
            assert answer.decision.credit_balance == Decimal("-0.800000")
    finally:
        worker.stop()
