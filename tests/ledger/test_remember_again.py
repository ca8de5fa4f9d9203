"""``Ledger.remember_again`` records exactly the ids that applying the event recorded: what the
worker restores when a crash kept a batch's account states and lost its seen ids
(``streams/commit.py``), so that a later copy is still recognised and nothing more is refused."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import given

from billing.events import InvalidEvent, normalize_input
from billing.ledger import Ledger, from_millis
from billing.replay import Replay
from billing.seen_ids import MemorySeenIds
from tests.ledger.builders import Run, money, only
from tests.ledger.test_boundary import invoiced
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


def test_a_lost_invoice_payment_id_is_restored_while_the_invoice_is_open(run, ev):
    """The same crash after an ``invoice_paid`` that paid part of an invoice: without its payment
    id, a retry of the payment under a new event id paid the invoice a second time."""
    invoice_id = invoiced(run, ev)  # $29 unpaid
    paid = {**ev.invoice_paid(invoice_id, "10"), "payment_id": "pay-9"}
    run(paid)
    assert run.state().invoice_payment_ids == {invoice_id: ("pay-9",)}
    retry = {**paid, "event_id": "paid-retry"}

    def after_the_crash(restore: bool) -> Ledger:
        lost = copy.deepcopy(run.ledger.seen)  # the seen ids as the crash left them
        del lost._payments["acct-1"]["pay-9"]
        ledger = run.ledger.with_seen(lost)
        if restore:  # the worker, at the redelivery of the event its state already holds
            ledger.remember_again(run.state(), paid)
        return ledger

    unguarded = after_the_crash(restore=False).apply(run.copy_state(), retry)
    assert unguarded.state.outstanding_balance == money("9")  # what the crash made possible
    restored = after_the_crash(restore=True).apply(run.copy_state(), retry)
    assert restored.outputs == []
    assert restored.state.outstanding_balance == money("19")


def test_a_lost_payment_id_of_a_closed_invoice_still_refuses_another_payment_under_it(run, ev):
    """The same crash after the ``invoice_paid`` events that closed an invoice: a retry of them
    is refused as not open anyway, but a purchase reusing one of their payment ids must still be
    refused as a conflict, not credited."""
    invoice_id = invoiced(run, ev)  # $29 unpaid
    part = {**ev.invoice_paid(invoice_id, "10"), "payment_id": "pay-1"}
    rest = {**ev.invoice_paid(invoice_id, "19"), "payment_id": "pay-2"}
    run(part)
    run(rest)
    assert run.state().invoices == {} and run.state().invoice_payment_ids == {}
    assert set(run.state().closed_invoice_payment_ids) == {"pay-1", "pay-2"}
    lost = copy.deepcopy(run.ledger.seen)  # the crash lost both payment ids
    del lost._payments["acct-1"]["pay-1"], lost._payments["acct-1"]["pay-2"]
    ledger = run.ledger.with_seen(lost)
    for event in (part, rest):
        ledger.remember_again(run.state(), event)
    for payment_id in ("pay-1", "pay-2"):
        reuse = ev.purchase("5", payment_id=payment_id)
        result = ledger.apply(run.copy_state(), reuse)
        assert result.state.credit_balance == run.state().credit_balance
        assert "invoice_paid" in only(result.outputs, "command_rejected")["reason"]


def test_a_closed_invoice_s_payment_ids_go_once_the_horizon_passes_them(run, ev):
    """They are kept only as long as a copy of their events could still be applied."""
    invoice_id = invoiced(run, ev)
    run({**ev.invoice_paid(invoice_id, "29"), "payment_id": "pay-1"})
    assert set(run.state().closed_invoice_payment_ids) == {"pay-1"}
    paid_ms = run.state().closed_invoice_payment_ids["pay-1"]
    horizon_ms = run.ledger.config.dedup_horizon // timedelta(milliseconds=1)
    run(ev.usage("1", at=from_millis(paid_ms + horizon_ms)))
    assert set(run.state().closed_invoice_payment_ids) == {"pay-1"}
    run(ev.usage("1", at=from_millis(paid_ms + horizon_ms + 1)))
    assert run.state().closed_invoice_payment_ids == {}
