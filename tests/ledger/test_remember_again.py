"""``Ledger.remember_again`` records exactly the ids that applying the event recorded: what the
worker restores when a crash kept a batch's account states and lost its seen ids
(``streams/commit.py``), so that a later copy is still recognised and nothing more is refused."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given

from billing.events import InvalidEvent, normalize_input
from billing.replay import Replay
from billing.seen_ids import MemorySeenIds
from tests.ledger.builders import Run
from tests.ledger.test_properties import SETTINGS, materialize, scenarios


def _triples(seen: MemorySeenIds) -> set[tuple[str, int, str]]:
    """(account, bucket, event id) of every event id held."""
    return {(account, bucket, event_id) for account, buckets in seen._events.items()
            for bucket, ids in buckets.items() for event_id in ids}


def _payments(seen: MemorySeenIds) -> set[tuple[str, str, Any]]:
    return {(account, payment_id, record) for account, payments in seen._payments.items()
            for payment_id, record in payments.items()}


@SETTINGS
@given(scenarios())
def test_remembering_an_applied_event_again_adds_what_applying_it_added(scenario):
    """Added, not forgotten: what the horizon let the event forget stays (below the horizon,
    never looked up again)."""
    seen = MemorySeenIds()
    replay = Replay(Run().ledger.with_seen(seen))
    checked = 0
    for event in materialize(scenario):
        if not event["account_id"]:
            replay.apply(copy.deepcopy(event))  # a broadcast close: no ids
            continue
        before = copy.deepcopy(seen)
        try:
            replay.apply(copy.deepcopy(event))
        except InvalidEvent:
            continue  # refused: not applied, no position in the state, nothing to restore
        restored = copy.deepcopy(before)
        replay.ledger.with_seen(restored).remember_again(replay.accounts[event["account_id"]],
                                                         copy.deepcopy(event))
        added = _triples(seen) - _triples(before)
        assert _triples(restored) == _triples(before) | added, event
        paid = _payments(seen) - _payments(before)
        if event["type"] == "invoice_paid":  # its payment id is left as it is
            assert _payments(restored) == _payments(before), event
        else:
            assert _payments(restored) == _payments(before) | paid, event
        checked += 1
    assert checked


def test_a_lost_purchase_id_is_restored_so_a_retry_credits_nothing():
    """The crash this is for: the state holds the purchase, the seen ids do not."""
    run = Run()
    seen = MemorySeenIds()
    replay = Replay(run.ledger.with_seen(seen))
    opened = {"type": "account_opened", "event_id": "open", "account_id": "a",
              "timestamp": "2025-07-01T00:00:00Z", "created_at": "2025-03-01T00:00:00Z",
              "contract": "self_serve", "billing_model": None}
    purchase = {"type": "credits_purchased", "event_id": "buy", "account_id": "a",
                "timestamp": "2025-07-01T01:00:00Z", "amount": "10", "payment_id": "pay-1"}
    replay.apply(normalize_input(opened))
    replay.apply(normalize_input(purchase))
    balance = replay.accounts["a"].credit_balance
    lost = MemorySeenIds()  # the seen ids as the crash left them: the purchase's are gone
    lost.add_event("a", 0, "open")
    ledger = run.ledger.with_seen(lost)
    ledger.remember_again(replay.accounts["a"], normalize_input(purchase))
    retry = normalize_input({**purchase, "event_id": "buy-retry"})
    copy_of_purchase = normalize_input(purchase)
    state = replay.accounts["a"]
    assert ledger.apply(state, copy_of_purchase).duplicate
    assert ledger.apply(state, retry).state.credit_balance == balance
