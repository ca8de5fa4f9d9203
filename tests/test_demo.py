"""``billing demo`` without Kafka: the report (figures on chdb, text, HTML with its charts), the
simulated payment processor's answers, the workload it publishes and the wait for a quiet pipeline.
The whole run against a broker is ``tests/integration/test_demo.py``."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka.errors import KafkaError, NotCoordinatorError, TopicAuthorizationFailedError

import commands.demo
from billing.config import BillingConfig
from billing.events import normalize_input
from commands.cli import main
from commands.demo import DemoOptions, PaymentProcessor, wait_quiet, workload
from dashboard.report import (
    RunFacts,
    RunReport,
    Section,
    balance_histogram,
    bar_chart,
    line_chart,
    render_html,
    summarize,
    summary_text,
    write_html,
)
from devkit.workload import generate
from runtime.rules_files import load_pricebook
from runtime.settings import load_settings
from sinks.reconcile import reconcile
from tests.test_sink_samples import chdb_with_tables, ledger_run, store

REPORT = RunReport(
    run_id="20260101-000000",
    ok=True,
    sections=(Section("Run", (("run id", "20260101-000000"), ("workload", "3 accounts"))),
              Section("Money (ClickHouse)", (("out: usage spend", "$12.500000"),
                                             ("note", "<b>escaped</b>")))),
    daily_spend=((date(2026, 1, 1), Decimal("1.250000")), (date(2026, 1, 2), Decimal("0")),
                 (date(2026, 1, 3), Decimal("11.250000"))),
    balances=balance_histogram([Decimal("-0.5"), Decimal("0"), Decimal("4.2"),
                                Decimal("12000")]),
    tiers=(("0", 1), ("1", 2), ("enterprise", 0)),
    statuses=(("active", 2), ("paused", 0), ("suspended", 1)),
)


def facts(**fields: object) -> RunFacts:
    values: dict[str, object] = dict(
        run_id="r1", accounts=25, events=2500, seed=7, published=2490, refused=0,
        left_to_processor=10, top_ups_paid=9, top_ups_paid_amount=Decimal("450.000000"),
        top_ups_failed=1, seconds=75, clickhouse="chdb:///tmp/x",
        free_credit=BillingConfig().free_credit)
    return RunFacts(**{**values, **fields})


# -- the report ----------------------------------------------------------------------------------


def test_html_report_holds_the_summary_and_four_charts(tmp_path: Path) -> None:
    path = write_html(REPORT, tmp_path / "deep" / "report.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 4
    for title in ("Spend per day", "Credit balance", "Final tier", "Final status",
                  "Run", "Money (ClickHouse)"):
        assert title in page
    assert "$12.500000" in page and "reconciled: zero difference" in page
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page and "<b>escaped" not in page
    # Self-contained: no scripts, no stylesheets or images from anywhere.
    assert not re.search(r"<script|<link|<img|src=|href=", page)
    # Hover titles carry the exact figures behind the drawn (rounded) shapes.
    assert "Sat 2026-01-03: $11.250000" in page
    assert ">&lt; $0: 1<" in page and ">≥ $10k: 1<" in page


def test_a_failed_reconciliation_shows_on_the_page_and_in_the_text() -> None:
    failed = RunReport(**{**REPORT.__dict__, "ok": False})
    assert "differences found" in render_html(failed)
    assert summary_text(failed).splitlines()[0].endswith("DIFFERENCES FOUND")


def test_summary_text_has_one_value_column_for_all_sections() -> None:
    text = summary_text(REPORT)
    assert text.splitlines()[0] == "Billing demo 20260101-000000: reconciled, zero difference"
    assert "\nRun\n  run id            20260101-000000\n  workload          3 accounts\n" in text
    assert "\nMoney (ClickHouse)\n  out: usage spend  $12.500000\n" in text


def test_charts_cope_with_nothing_to_draw() -> None:
    assert "no usage" in line_chart("Spend per day", [])
    zeros = bar_chart("Tiers", [("0", 0), ("1", 0)])
    assert zeros.count("<rect") == 2 and 'height="0.0"' in zeros
    single = line_chart("Spend per day", [(date(2026, 1, 5), Decimal("3.000000"))])
    assert single.count("<circle") == 1


def test_balance_buckets_are_all_present_and_in_order() -> None:
    histogram = balance_histogram([Decimal("0.000001"), Decimal("1"), Decimal("-3")])
    assert [bucket for bucket, _ in histogram] == [
        "< $0", "$0", "$0-1", "$1-10", "$10-100", "$100-1k", "$1k-10k", "≥ $10k"]
    assert dict(histogram) == {"< $0": 1, "$0": 0, "$0-1": 1, "$1-10": 1, "$10-100": 0,
                               "$100-1k": 0, "$1k-10k": 0, "≥ $10k": 0}


def test_summary_figures_come_from_clickhouse_and_agree_with_the_ledger(tmp_path: Path) -> None:
    run = ledger_run()
    with chdb_with_tables(tmp_path / "chdb") as writer:
        store(writer, run.rated, run.outputs)
        reconciliation = reconcile(writer, run.snapshots_json)
        report = summarize(writer, run.snapshots_json, facts(), Counter(product=2),
                           reconciliation)
    rows = {label: value for section in report.sections for label, value in section.rows}
    types = Counter(event["type"] for event in run.outputs)
    assert report.ok and reconciliation.ok
    assert rows["balances = free credit + money in - money out"] == "yes"
    assert rows["differences"] == "0"
    assert rows["requested"] == f"{types['top_up_requested']:,}"
    assert rows["suspensions"] == f"{types['account_suspended']:,}"
    assert rows["issued"].startswith(f"{types['invoice_issued']:,}, total $")
    spend = sum(record["cost"] for record in run.rated)
    assert rows["out: usage spend"].startswith(f"${spend:,} ({len(run.rated):,} usage events")
    assert rows["by field at fault"] == "product 2"
    assert rows["wall time"] == "1 min 15 s"
    assert sum(count for _, count in report.tiers) == len(run.snapshots_json)
    assert sum(count for _, count in report.balances) == len(run.snapshots_json)
    assert sum(cost for _, cost in report.daily_spend) == spend


# -- the payment processor --------------------------------------------------------------------


def request(number: int) -> dict[str, object]:
    return {"type": "top_up_requested", "account_id": f"acct-{number}",
            "top_up_request_id": f"topup-acct-{number}-1", "amount": Decimal("50.000000"),
            "timestamp": datetime(2026, 1, 10, 8, 0, tzinfo=UTC)}


def test_processor_answers_are_valid_deterministic_and_about_ten_percent_declined() -> None:
    processor = PaymentProcessor(load_settings({}), "group", seed=7, failure_percent=10)
    answers = [processor.answer(request(number)) for number in range(1000)]
    assert answers == [processor.answer(request(number)) for number in range(1000)]
    declined = [answer for answer in answers if answer["type"] == "payment_failed"]
    assert 60 <= len(declined) <= 140
    for number, answer in enumerate(answers):
        normalize_input(dict(answer))  # what EventProducer checks before sending
        assert answer["top_up_request_id"] == f"topup-acct-{number}-1"
        assert answer["event_id"] == f"processor-topup-acct-{number}-1"
        assert answer["timestamp"] > request(number)["timestamp"]
    paid = next(answer for answer in answers if answer["type"] == "credits_purchased")
    assert paid["amount"] == Decimal("50.000000")
    other_seed = PaymentProcessor(load_settings({}), "group", seed=8, failure_percent=10)
    assert [other_seed.answer(request(n))["type"] for n in range(1000)] != \
        [answer["type"] for answer in answers]


def test_the_generator_top_up_answers_are_left_to_the_processor() -> None:
    options = DemoOptions(accounts=60, events=3000, seed=3, bad_fraction=0.0)
    events, left_out = workload(options, load_pricebook(), BillingConfig())
    generated = list(generate(60, 3000, 3))
    answers = [event for event in generated if event.get("top_up_request_id")]
    assert left_out == len(answers) > 0
    assert len(events) == len(generated) - left_out
    assert not any(event.get("top_up_request_id") for event in events)


# -- waiting for a quiet pipeline -------------------------------------------------------------


Step = tuple[tuple[int, int, int], tuple[int, int]] | KafkaError


class FakePipeline:
    """Lags and counts (or a Kafka error instead) as a scripted sequence, one step per check."""

    def __init__(self, script: list[Step]) -> None:
        self.script, self.checks = script, 0

    def step(self) -> Step:
        return self.script[min(self.checks, len(self.script)) - 1]

    def check(self) -> None:
        self.checks += 1

    def lags(self) -> tuple[int, int, int]:
        step = self.step()
        if isinstance(step, KafkaError):
            raise step
        return step[0]

    def counts(self) -> tuple[int, int]:
        step = self.step()
        assert not isinstance(step, KafkaError)
        return step[1]

    def inputs(self) -> int:
        return 100


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands.demo.time, "sleep", lambda _seconds: None)


def test_quiet_means_no_lag_twice_with_nothing_new_in_between(no_sleep: None) -> None:
    pipeline = FakePipeline([((40, 0, 3), (10, 1)), ((0, 0, 0), (12, 2)),  # an answer came in
                             ((0, 0, 0), (14, 2)), ((0, 0, 0), (14, 2))])
    wait_quiet(pipeline, deadline=float("inf"), show=False)
    assert pipeline.checks == 4


def test_lags_unknown_while_a_coordinator_loads_are_not_quiet(no_sleep: None) -> None:
    pipeline = FakePipeline([((0, 0, 0), (3, 1)), NotCoordinatorError("loading"),
                             ((0, 0, 0), (3, 1)), ((0, 0, 0), (3, 1))])
    wait_quiet(pipeline, deadline=float("inf"), show=False)
    assert pipeline.checks == 4


def test_a_kafka_error_that_retrying_cannot_fix_is_raised(no_sleep: None) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        wait_quiet(FakePipeline([TopicAuthorizationFailedError("no")]), deadline=float("inf"),
                   show=False)


def test_a_pipeline_that_never_drains_times_out(no_sleep: None) -> None:
    pipeline = FakePipeline([((5, 0, 0), (1, 0))])
    with pytest.raises(TimeoutError, match=r"worker/processor/sink \(5, 0, 0\)"):
        wait_quiet(pipeline, deadline=0.0, show=False)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--run-id", "again"], "run id again was used already"),
    (["--run-id", "a/b"], "run id 'a/b' must be 1-100 letters"),
    (["--accounts", "100", "--events", "50"], "too few for 100 accounts"),
])
def test_a_run_that_cannot_work_stops_before_touching_kafka(tmp_path: Path, arguments: list[str],
                                                            message: str) -> None:
    (tmp_path / "demo" / "again").mkdir(parents=True)
    result = CliRunner().invoke(main, ["demo", "--no-progress", *arguments],
                                env={"BILLING_DATA_DIR": str(tmp_path),
                                     "BILLING_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert sorted(path.name for path in (tmp_path / "demo").iterdir()) == ["again"]
