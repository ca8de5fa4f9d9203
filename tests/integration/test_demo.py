"""``billing demo`` end to end on the test stack's broker: a small population through the worker,
the simulated payment processor and the sink into chdb, to a summary that reconciles to zero and
an HTML report with its charts, and the run's snapshots kept for `billing reconcile`."""

from __future__ import annotations

import uuid

import orjson
import pytest
from click.testing import CliRunner

from commands.cli import main
from commands.demo import DemoOptions, run_demo
from runtime.settings import Settings

pytestmark = pytest.mark.integration


def count(text: str) -> int:
    """The number a summary value starts with (``"1,234 ($5.000000)"`` -> 1234)."""
    return int(text.split()[0].rstrip(",").replace(",", ""))


def test_demo_reconciles_to_zero_and_writes_the_report(stack: Settings) -> None:
    run_id = f"test-{uuid.uuid4().hex[:8]}"
    result = run_demo(stack, DemoOptions(accounts=200, events=5_000, seed=11, run_id=run_id,
                                         progress=False, timeout=600))

    assert result.reconciliation.ok, [str(d) for d in result.reconciliation.differences[:5]]
    assert result.reconciliation.accounts == 200
    assert result.report.ok
    rows = {label: value for section in result.report.sections for label, value in section.rows}
    assert rows["differences"] == "0"
    assert rows["balances = free credit + money in - money out"] == "yes"
    assert rows["still awaiting an answer"] == "0"
    # Every top-up the ledger requested was answered by the processor, paid or declined.
    assert count(rows["paid"]) + count(rows["declined"]) == count(rows["requested"]) > 0

    assert result.report_path == stack.data_dir / "demo" / run_id / "report.html"
    page = result.report_path.read_text(encoding="utf-8")
    assert page.count("<svg") == 4 and "reconciled: zero difference" in page

    # The snapshots the run reconciled against are kept, and reconcile the same again later
    # (what the command the demo prints does).
    assert result.snapshots_path == result.report_path.parent / "snapshots.json"
    assert len(orjson.loads(result.snapshots_path.read_bytes())) == 200
    again = CliRunner().invoke(main, ["reconcile", "--snapshots", str(result.snapshots_path)],
                               env={"BILLING_CLICKHOUSE_URL":
                                    f"chdb://{result.report_path.parent / 'chdb'}"})
    assert again.exit_code == 0, again.output
    assert again.stdout.rstrip().endswith(": OK")
