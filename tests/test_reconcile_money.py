"""Reconciliation compares money per account, not only rows: credits purchased, invoice payments,
free credit, invoices and the ledger's conservation identity, against ClickHouse's sums.

The pure comparisons first, then the real ledger's output on embedded ClickHouse (chdb) with one
credit row removed, one collapsed into its twin, one forged, and the command's exit code.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from billing.events import dumps
from sinks.cli import reconcile_command
from sinks.clickhouse import ClickHouseWriter
from sinks.reconcile import (
    Difference,
    compare_balances,
    compare_credits,
    compare_invoiced,
    compare_money,
    invoiced_by_account,
    load_events,
    reconcile,
)
from tests.test_sink_samples import chdb_with_tables, ledger_run, output_event, snapshot, store

D = Decimal
BALANCE = ("credit_balance - outstanding_balance "
           "(free credit + purchases + invoice payments - spend)")


# -- the comparisons, pure -------------------------------------------------------------------


def money(free: str = "1", purchased: str = "0", paid: str = "0") -> dict[str, Decimal]:
    return {"free_credit": D(free), "credits_purchased": D(purchased),
            "invoice_payments": D(paid)}


def test_credits_purchased_differ_when_clickhouse_lost_or_collapsed_a_credit() -> None:
    snapshots = {"a": {"lifetime_credits_purchased": "100"},
                 "b": {"lifetime_credits_purchased": "25.5"}}
    assert compare_credits(snapshots, {"a": money(purchased="100"),
                                       "b": money(purchased="25.5")}) == []
    assert compare_credits(snapshots, {"a": money(purchased="50"),
                                       "ghost": money(purchased="7")}) == [
        Difference("a", "lifetime_credits_purchased", D(100), D(50)),
        Difference("b", "lifetime_credits_purchased", D("25.5"), D(0)),
        Difference("ghost", "lifetime_credits_purchased", None, D(7)),
    ]
    # An account ClickHouse knows only by its free credit has no purchase to report.
    assert compare_credits({}, {"c": money()}) == []


def test_conservation_uses_clickhouse_totals_and_the_snapshot_balances() -> None:
    # Postpaid: $1 free, $20 bought, $3.06 of invoices paid, $30 spent -> -$5.94 net.
    snapshots = {"a": {"credit_balance": "0", "outstanding_balance": "5.94"}}
    spend = {"a": {"2026-01": D("26"), "2026-02": D("4")}}
    assert compare_balances(snapshots, spend, {"a": money("1", "20", "3.06")}) == []
    # The invoice payment row is gone: nothing in the snapshot names it, the identity does.
    assert compare_balances(snapshots, spend, {"a": money("1", "20", "0")}) == [
        Difference("a", BALANCE, D("-5.94"), D("-9.00"))]
    # Nothing at all in ClickHouse for an account the ledger has.
    assert compare_balances({"b": {"credit_balance": "1", "outstanding_balance": "0"}}, {},
                            {}) == [Difference("b", BALANCE, D(1), D(0))]


def test_invoiced_and_money_in_per_account() -> None:
    expected = invoiced_by_account({"inv-1": ("a", "2026-01", D(63)),
                                    "inv-2": ("a", "2026-02", D(1))})
    assert expected == {"a": D(64)}
    assert compare_invoiced(expected, {"a": D(64)}) == []
    assert compare_invoiced(expected, {"a": D(63), "b": D(1)}) == [
        Difference("a", "invoiced", D(64), D(63)), Difference("b", "invoiced", D(0), D(1))]
    assert compare_money({"a": money(paid="3")}, {"a": money(paid="3")}) == []
    assert compare_money({"a": money(paid="3")}, {"a": money(paid="0")}, suffix=" (events)") == [
        Difference("a", "invoice_payments (events)", D(3), D(0))]


def test_the_events_file_counts_every_line(tmp_path: Path) -> None:
    opened = output_event(1, "tier_changed", from_tier=None, to_tier="0")
    opened["snapshot"] = snapshot(credit_balance=D("1.000000"))
    bought = output_event(2, "credits_applied", amount=D("50"), payment_id="pay-1",
                          invoice_id=None)
    paid = output_event(3, "credits_applied", amount=D("2.5"), payment_id=None,
                        invoice_id="inv-1")
    issued = output_event(4, "invoice_issued", invoice_id="inv-1", period="2026-01",
                          amount=D("2.5"))
    path = tmp_path / "events.jsonl"
    # The purchase twice with one id: the ledger's word is $100, whatever ClickHouse keeps.
    path.write_bytes(b"".join(dumps(e) + b"\n"
                              for e in (opened, bought, bought, paid, issued, issued)))
    events = load_events(path)
    assert events.money == {"acct-1": money("1", "100", "2.5")}
    assert events.invoices == {"inv-1": ("acct-1", "2026-01", D("2.5"))}
    assert events.invoiced == {"acct-1": D(5)}


# -- the real ledger's output on chdb --------------------------------------------------------


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ClickHouseWriter]:
    with chdb_with_tables(tmp_path / "chdb") as opened:
        yield opened


def events_of(tmp_path: Path, outputs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(dumps(event) + b"\n" for event in outputs))
    return path


def credit(invoice_payment: bool = False) -> dict[str, Any]:
    """The ledger run's first credits_applied from a purchase (or from an invoice_paid)."""
    return next(event for event in ledger_run().outputs if event["type"] == "credits_applied"
                and (event["invoice_id"] is not None) == invoice_payment)


def figures(report_differences: list[Difference]) -> set[tuple[str, str]]:
    return {(difference.subject, difference.figure) for difference in report_differences}


def test_matching_data_has_no_difference(writer: ClickHouseWriter, tmp_path: Path) -> None:
    run = ledger_run()
    store(writer, run.rated, run.outputs)
    store(writer, outputs=[e for e in run.outputs if e["type"] == "credits_applied"])  # copies
    report = reconcile(writer, run.snapshots_json,
                       events=load_events(events_of(tmp_path, run.outputs)))
    assert report.ok, report.differences
    assert report.accounts == len(run.snapshots_json)


def test_a_removed_credit_row_is_a_difference_in_credits_purchased(
        writer: ClickHouseWriter, tmp_path: Path) -> None:
    run, victim = ledger_run(), credit()
    store(writer, run.rated, [e for e in run.outputs if e is not victim])
    account_id, amount = victim["account_id"], victim["amount"]
    purchased = D(run.snapshots_json[account_id]["lifetime_credits_purchased"])
    report = reconcile(writer, run.snapshots_json,
                       events=load_events(events_of(tmp_path, run.outputs)))
    assert Difference(account_id, "lifetime_credits_purchased", purchased,
                      purchased - amount) in report.differences
    assert figures(report.differences) == {
        (account_id, "lifetime_credits_purchased"),
        (account_id, "credits_purchased (events)"),
        (account_id, BALANCE),
    }
    # Without the events file the snapshot alone still finds it.
    assert figures(reconcile(writer, run.snapshots_json).differences) == {
        (account_id, "lifetime_credits_purchased"), (account_id, BALANCE)}


def test_a_removed_invoice_payment_breaks_the_conservation_identity(
        writer: ClickHouseWriter, tmp_path: Path) -> None:
    run, victim = ledger_run(), credit(invoice_payment=True)
    store(writer, run.rated, [e for e in run.outputs if e is not victim])
    account_id = victim["account_id"]
    assert figures(reconcile(writer, run.snapshots_json).differences) == {(account_id, BALANCE)}
    report = reconcile(writer, run.snapshots_json,
                       events=load_events(events_of(tmp_path, run.outputs)))
    assert figures(report.differences) == {(account_id, BALANCE),
                                           (account_id, "invoice_payments (events)")}


def test_a_credit_applied_twice_under_one_id_collapses_and_is_found(
        writer: ClickHouseWriter, tmp_path: Path) -> None:
    """The issue's case: the ledger applied one purchase twice and both outputs had the same
    event_id, so ReplacingMergeTree kept one; ledger $2x, ClickHouse $x."""
    run, twice = ledger_run(), credit()
    account_id, amount = twice["account_id"], twice["amount"]
    doubled = dict(run.snapshots_json[account_id])
    for field in ("lifetime_credits_purchased", "credit_balance"):
        doubled[field] = str(D(doubled[field]) + amount)
    snapshots = {**run.snapshots_json, account_id: doubled}
    store(writer, run.rated, run.outputs)
    store(writer, outputs=[twice])  # the second copy, same id: FINAL shows one
    assert writer.query("SELECT count() FROM credit_purchases FINAL WHERE event_id = %(id)s",
                        {"id": twice["event_id"]}) == [(1,)]
    index = run.outputs.index(twice)
    outputs = [*run.outputs[:index + 1], twice, *run.outputs[index + 1:]]
    report = reconcile(writer, snapshots, events=load_events(events_of(tmp_path, outputs)))
    assert figures(report.differences) == {
        (account_id, "lifetime_credits_purchased"),
        (account_id, "credits_purchased (events)"),
        (account_id, BALANCE),
    }
    assert Difference(account_id, "credits_purchased (events)",
                      D(doubled["lifetime_credits_purchased"]),
                      D(doubled["lifetime_credits_purchased"]) - amount) in report.differences


def test_a_lost_invoice_is_a_difference_in_the_account_invoiced(
        writer: ClickHouseWriter, tmp_path: Path) -> None:
    run = ledger_run()
    victim = next(event for event in run.outputs if event["type"] == "invoice_issued")
    store(writer, run.rated, [e for e in run.outputs if e is not victim])
    report = reconcile(writer, run.snapshots_json,
                       events=load_events(events_of(tmp_path, run.outputs)))
    assert figures(report.differences) == {
        (victim["invoice_id"], "invoice (account, period, amount)"),
        (victim["account_id"], "invoiced"),
    }
    # The ledger issued it twice (one id): ClickHouse's one row is half of what was billed.
    store(writer, outputs=[victim])
    report = reconcile(writer, run.snapshots_json,
                       events=load_events(events_of(tmp_path, [*run.outputs, victim])))
    assert figures(report.differences) == {(victim["account_id"], "invoiced")}


def test_an_extra_credit_in_clickhouse_is_found(writer: ClickHouseWriter) -> None:
    run, real = ledger_run(), credit()
    store(writer, run.rated, run.outputs)
    store(writer, outputs=[{**real, "event_id": "forged", "amount": D("0.000001"),
                            "applied_to_outstanding": D(0), "applied_to_credit": D("0.000001")}])
    differences = reconcile(writer, run.snapshots_json).differences
    assert figures(differences) == {(real["account_id"], "lifetime_credits_purchased"),
                                    (real["account_id"], BALANCE)}
    assert all(str(difference).endswith(" diff=0.000001") for difference in differences)


def test_a_row_missing_from_the_credit_purchases_view_only(writer: ClickHouseWriter) -> None:
    run, victim = ledger_run(), credit()
    store(writer, run.rated, run.outputs)
    writer.execute("TRUNCATE TABLE credit_purchases")
    writer.execute(
        "INSERT INTO credit_purchases SELECT event_id, account_id, timestamp, timestamp_ms, "
        "cause_event_id, assumeNotNull(amount), payment_id, invoice_id, receipt_url, "
        "assumeNotNull(applied_to_outstanding), assumeNotNull(applied_to_credit) "
        f"FROM account_state_events FINAL WHERE type = 'credits_applied' "
        f"AND event_id != '{victim['event_id']}'")
    assert figures(reconcile(writer, run.snapshots_json).differences) == {
        (victim["account_id"], "lifetime_credits_purchased"),
        (victim["account_id"], BALANCE),
        (victim["account_id"], "credits_purchased (credit_purchases view)"),
    }


def test_the_command_names_the_account_and_the_figure(tmp_path: Path) -> None:
    run, victim = ledger_run(), credit()
    with chdb_with_tables(tmp_path / "chdb") as writer:
        store(writer, run.rated, [e for e in run.outputs if e is not victim])
    snapshots = tmp_path / "snapshots.json"
    snapshots.write_bytes(orjson.dumps(run.snapshots_json))
    events = events_of(tmp_path, run.outputs)
    result = CliRunner().invoke(reconcile_command, ["--snapshots", str(snapshots),
                                                    "--events", str(events)],
                                env={"BILLING_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"})
    assert result.exit_code == 1, result.output
    account_id = victim["account_id"]
    purchased = D(run.snapshots_json[account_id]["lifetime_credits_purchased"])
    assert (f"{account_id} lifetime_credits_purchased: ledger={purchased} "
            f"clickhouse={purchased - victim['amount']}") in result.output
    assert result.output.rstrip().endswith("3 difference(s)")
