"""Month close: close_period (targeted, broadcast), watermark, own late events, late usage."""

from datetime import timedelta

import pytest

from billing.config import BillingConfig
from billing.events import InvalidEvent
from billing.replay import Replay
from tests.ledger.builders import (
    Events,
    Run,
    at,
    enterprise_postpaid,
    ledger_view,
    money,
    of_type,
    only,
    prepaid_with_card,
    types,
)


class ReplayRun:
    """Replay (ledger + global watermark) with the test price book; keeps every output."""

    def __init__(self) -> None:
        self.replay = Replay(Run().ledger)
        self.outputs: list[dict] = []

    def __call__(self, event: dict) -> tuple[list[dict], dict | None]:
        outputs, rated = self.replay.apply(event)
        self.outputs.extend(outputs)
        return outputs, rated

    def snap(self, account_id: str) -> dict:
        return self.replay.snapshots()[account_id]


def two_postpaid_accounts() -> tuple[ReplayRun, Events, Events]:
    replay, a, b = ReplayRun(), Events("A"), Events("B")
    for events in (a, b):
        replay(events.opened("enterprise", billing_model="postpaid"))
    replay(a.usage("10", at="2025-07-10T00:00:00Z"))
    replay(b.usage("20", at="2025-07-11T00:00:00Z"))
    return replay, a, b


# -- close_period ---------------------------------------------------------------------------


def test_targeted_close_period_issues_the_invoice_and_resets_spend(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("12", at="2025-07-20T00:00:00Z"))
    outputs = run(ev.close_period("2025-07", event_id="ops-1", at="2025-07-25T00:00:00Z")).outputs
    assert types(outputs) == ["invoice_issued"]
    assert outputs[0]["timestamp"] == at("2025-07-25T00:00:00Z")
    snap = run.snap()
    assert (snap["open_period"], snap["month_to_date_spend"]) == ("2025-08", 0)
    assert snap["outstanding_balance"] == money("12")  # invoiced, still owed


def test_closing_a_closed_month_does_nothing(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("12"))
    run(ev.close_period("2025-07"))
    before = ledger_view(run.state())
    assert run(ev.close_period("2025-07")).outputs == []
    assert run(ev.close_period("2025-06")).outputs == []
    assert ledger_view(run.state()) == before


def test_close_period_closes_every_older_open_month(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("1", at="2025-07-10T00:00:00Z"))
    run(ev.usage("2", at="2025-08-01T00:30:00Z"))  # July still open (grace)
    outputs = run(ev.close_period("2025-08", at="2025-08-01T00:40:00Z")).outputs
    invoices = [(o["period"], o["amount"]) for o in of_type(outputs, "invoice_issued")]
    assert invoices == [("2025-07", money("1")), ("2025-08", money("2"))]
    assert run.snap()["open_period"] == "2025-09"


def test_no_invoice_for_a_month_without_charges(run, ev):
    enterprise_postpaid(run, ev)
    assert run(ev.close_period("2025-07")).outputs == []


# -- an account's own event past the close time ----------------------------------------------


@pytest.mark.parametrize(("when", "closes"), [
    ("2025-08-01T00:59:59.999Z", False),
    ("2025-08-01T01:00:00.000Z", True),   # start of next month + 1 h grace
    ("2025-09-20T00:00:00.000Z", True),
])
def test_own_event_past_the_close_time_closes_the_month_first(run, ev, when, closes):
    enterprise_postpaid(run, ev)
    run(ev.usage("5", at="2025-07-10T00:00:00Z"))
    outputs = run(ev.usage("1", at=when)).outputs
    assert bool(of_type(outputs, "invoice_issued")) is closes
    if closes:
        invoice = outputs[0]
        assert (invoice["type"], invoice["amount"]) == ("invoice_issued", money("5"))
        assert invoice["cause_event_id"] == "watermark:2025-07"
        assert invoice["timestamp"] == at("2025-08-01T01:00:00Z")
        assert run.state().month_unpaid == {"2025-" + when[5:7]: money("1")}


def test_own_event_closes_several_idle_months(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("5", at="2025-07-10T00:00:00Z"))
    run(ev.purchase("1", at="2025-10-02T00:00:00Z"))
    assert [o["period"] for o in of_type(run.outputs, "invoice_issued")] == ["2025-07"]
    assert run.state().open_period == "2025-10"


def test_close_grace_is_configurable():
    run, ev = Run(BillingConfig(close_grace=timedelta(0))), Events()
    enterprise_postpaid(run, ev)
    run(ev.usage("5", at="2025-07-10T00:00:00Z"))
    assert of_type(run(ev.usage("1", at="2025-08-01T00:00:00Z")).outputs, "invoice_issued")


# -- late usage -------------------------------------------------------------------------------


def test_late_usage_is_charged_to_the_open_month_and_flagged(run, ev):
    enterprise_postpaid(run, ev)
    run(ev.usage("5", at="2025-07-10T00:00:00Z"))
    run(ev.close_period("2025-07", at="2025-08-01T00:30:00Z"))
    rated = run(ev.usage("3", at="2025-07-31T23:59:59.999Z")).rated_usage
    assert (rated["late"], rated["billed_period"]) == (True, "2025-08")
    assert run.snap()["month_to_date_spend"] == money("3")
    assert run.state().month_unpaid == {"2025-08": money("3")}
    invoice = only(run(ev.close_period("2025-08")).outputs, "invoice_issued")
    assert invoice["amount"] == money("3")


def test_usage_of_an_unclosed_past_month_is_not_late(run, ev):
    """Inside the grace hour the previous month is still open: its usage is billed to it."""
    enterprise_postpaid(run, ev)
    run(ev.usage("2", at="2025-08-01T00:10:00Z"))
    rated = run(ev.usage("3", at="2025-07-31T23:59:00Z")).rated_usage
    assert (rated["late"], rated["billed_period"]) == (False, "2025-07")
    assert run.snap()["open_period"] == "2025-08"
    assert run.snap()["month_to_date_spend"] == money("2")


def test_late_usage_counts_toward_the_current_budget(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("10"))
    run(ev.close_period("2025-07", at="2025-08-02T00:00:00Z"))
    outputs = run(ev.usage("10", at="2025-07-30T00:00:00Z")).outputs
    assert only(outputs, "usage_paused")["reason"] == "budget_reached"


def test_prepaid_late_usage_is_flagged_too(run, ev):
    prepaid_with_card(run, ev, credit="10")
    run(ev.close_period("2025-07"))
    assert run(ev.usage("1", at="2025-07-02T00:00:00Z")).rated_usage["late"] is True


# -- over_limit ---------------------------------------------------------------------------


def test_over_limit_only_while_paused_or_suspended(run, ev):
    prepaid_with_card(run, ev, credit="9")
    flags = [run(ev.usage(cost)).rated_usage["over_limit"] for cost in ("5", "5", "1")]
    assert flags == [False, False, True]
    run(ev.purchase("20"))
    assert run(ev.usage("1")).rated_usage["over_limit"] is False


def test_over_limit_after_the_watermark_closed_the_budget_month(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("10"))
    run(ev.usage("10", at="2025-07-31T23:00:00Z"))
    rated = run(ev.usage("1", at="2025-08-01T01:00:00Z")).rated_usage  # closes July first
    assert rated["over_limit"] is False


def test_first_usage_of_a_new_month_is_not_over_the_previous_months_budget(run, ev):
    prepaid_with_card(run, ev, credit="100")
    run(ev.budget("10"))
    run(ev.usage("10", at="2025-07-31T23:00:00Z"))
    rated = run(ev.usage("1", at="2025-08-01T00:10:00Z")).rated_usage
    assert rated["over_limit"] is False


# -- the watermark and broadcasts (Replay) -------------------------------------------------


def test_broadcast_close_period_closes_every_account():
    replay, a, _ = two_postpaid_accounts()
    outputs, _ = replay(a.close_period("2025-07", broadcast=True, event_id="ops-all",
                                      at="2025-07-31T12:00:00Z"))
    invoices = {(o["account_id"], o["invoice_id"], o["amount"]) for o in outputs}
    assert invoices == {("A", "inv-A-2025-07", money("10")), ("B", "inv-B-2025-07", money("20"))}
    assert {o["cause_event_id"] for o in outputs} == {"ops-all"}
    assert {o["event_id"] for o in outputs} == {"A:close:2025-07:invoice_issued",
                                                "B:close:2025-07:invoice_issued"}
    assert replay(a.close_period("2025-07", broadcast=True))[0] == []  # idempotent


def test_another_accounts_usage_past_the_close_time_closes_everyone():
    replay, _, b = two_postpaid_accounts()
    outputs, _ = replay(b.usage("1", at="2025-08-01T00:59:59.999Z"))
    assert outputs == []
    outputs, _ = replay(b.usage("1", at="2025-08-01T01:00:00Z"))
    invoices = {(o["account_id"], o["amount"], o["cause_event_id"])
                for o in of_type(outputs, "invoice_issued")}
    assert invoices == {("A", money("10"), "watermark:2025-07"),
                        ("B", money("20"), "watermark:2025-07")}  # its 2 x $1 are August
    assert replay.snap("A")["open_period"] == "2025-08"


def test_watermark_only_moves_with_usage():
    replay, _, b = two_postpaid_accounts()
    outputs, _ = replay(b.purchase("1", at="2025-08-05T00:00:00Z"))
    assert [o["account_id"] for o in of_type(outputs, "invoice_issued")] == ["B"]  # own close
    assert replay.snap("A")["open_period"] == "2025-07"


def test_watermark_close_and_own_close_give_the_same_ids():
    replay, _, b = two_postpaid_accounts()
    replay(b.usage("1", at="2025-08-02T00:00:00Z"))  # closes A by the watermark
    by_watermark = [o for o in of_type(replay.outputs, "invoice_issued")
                    if o["account_id"] == "A"]
    run, ev = Run(), Events("A")
    enterprise_postpaid(run, ev, with_card=False)
    run(ev.usage("10", at="2025-07-10T00:00:00Z"))
    by_own = of_type(run(ev.usage("1", at="2025-08-02T00:00:00Z")).outputs, "invoice_issued")
    assert [o["event_id"] for o in by_watermark] == [o["event_id"] for o in by_own]
    assert [o["invoice_id"] for o in by_watermark] == ["inv-A-2025-07"]


def test_budget_pause_lifts_for_other_accounts_when_the_watermark_closes_the_month():
    replay, a, b = ReplayRun(), Events("A"), Events("B")
    replay(a.opened())
    replay(a.pm_added())
    replay(a.purchase("100"))
    replay(a.budget("10"))
    replay(b.opened("enterprise", billing_model="postpaid"))
    replay(a.usage("10", at="2025-07-20T00:00:00Z"))
    assert replay.snap("A")["status"] == "paused"
    outputs, _ = replay(b.usage("1", at="2025-08-01T02:00:00Z"))
    resumed = only(outputs, "usage_resumed")
    assert (resumed["account_id"], resumed["event_id"]) == ("A", "A:close:2025-07:usage_resumed")
    assert replay.snap("A")["month_to_date_spend"] == 0


def test_dead_lettered_usage_past_the_close_time_does_not_lose_invoices():
    replay, _, b = two_postpaid_accounts()
    with pytest.raises(InvalidEvent):
        replay(b.usage(product="no-such-model", quantities={"input_tokens": 1},
                       at="2025-08-02T00:00:00Z"))
    state = replay.replay.accounts["A"]
    issued = of_type(replay.outputs, "invoice_issued")
    # a dead-lettered usage moves no watermark: nothing closed, nothing lost
    assert state.open_period == "2025-07" and not issued


def test_watermark_closes_months_older_than_the_first_usage():
    replay, a, b = ReplayRun(), Events("A"), Events("B")
    replay(a.opened("enterprise", billing_model="postpaid", at="2025-07-01T00:00:00Z"))
    replay(b.opened("enterprise", billing_model="postpaid", at="2025-07-01T00:00:00Z"))
    replay(a.usage("1", at="2025-09-10T00:00:00Z"))  # watermark past July's and August's close
    assert replay.snap("B")["open_period"] == "2025-09"
    _, rated = replay(b.usage("2", at="2025-07-20T00:00:00Z"))
    assert (rated["late"], rated["billed_period"]) == (True, "2025-09")
