"""What a ``billing demo`` run did: a summary for the terminal and a self-contained HTML report.

:func:`summarize` gathers the figures from the two sides that must agree: ClickHouse (the
analytics copy the sink wrote) and the ledger's final account snapshots (the worker's table). Event
counts and money come from ClickHouse, populations from the snapshots, and the reconciliation of
one against the other (``sinks.reconcile``) is part of the summary, with a second check that the
balances are explained by the money in and out (the ledger's conservation invariant, summed over
every account). The result is a plain :class:`RunReport`, so rendering needs no database:
:func:`summary_text` for the terminal, :func:`render_html` / :func:`write_html` for a page a person
can open anywhere, without network or JavaScript (charts are inline SVG drawn here).

Money stays ``Decimal`` all the way, chart coordinates included: the rules allow no float, and a
chart that rounds is still drawn from exact figures.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

from billing.events import MICRO, ZERO, to_money
from sinks.clickhouse import ClickHouseWriter
from sinks.reconcile import Report as Reconciliation

# One row per kind of output event; ``detail`` splits the kinds whose breakdown the summary shows.
OUTPUT_COUNTS_SQL = """
SELECT
    type,
    multiIf(type = 'usage_paused', ifNull(reason, ''),
            type = 'command_rejected', ifNull(rejected_type, ''),
            type = 'tier_changed' AND from_tier IS NULL, 'opened',
            '') AS detail,
    count()
FROM account_state_events FINAL
GROUP BY type, detail
"""
CREDITS_SQL = """
SELECT
    countIf(invoice_id IS NULL), sumIf(amount, invoice_id IS NULL),
    countIf(invoice_id IS NOT NULL), sumIf(amount, invoice_id IS NOT NULL)
FROM credit_purchases FINAL
"""
INVOICES_SQL = "SELECT count(), sum(amount) FROM invoices FINAL"
USAGE_SQL = """
SELECT count(), sum(requests), sum(cost), countIf(late), countIf(over_limit)
FROM rated_usage FINAL
"""
DAILY_SPEND_SQL = "SELECT day, sum(cost) FROM spend_daily GROUP BY day ORDER BY day"

# Credit balance buckets of the histogram: upper bounds in dollars (a balance of exactly 0 and
# negative balances, usage taken in flight, get buckets of their own).
BALANCE_BOUNDS = (Decimal(1), Decimal(10), Decimal(100), Decimal(1_000), Decimal(10_000))
TIER_ORDER = ("0", "1", "2", "3", "4", "enterprise")
STATUS_ORDER = ("active", "paused", "suspended")
# rated_usage.over_limit: the request was served while the account was paused or suspended.
SERVED_WHILE_BLOCKED = "served while paused or suspended"
TIER_CHANGES_LABEL = "tier changes (excluding account opening)"


@dataclass(frozen=True)
class RunFacts:
    """What only the demo knows: the run itself and what its simulated payment processor did."""

    run_id: str
    accounts: int
    events: int
    seed: int
    published: int
    refused: int  # invalid events the producer refused before sending
    left_to_processor: int  # the generator's offline top-up answers, replaced by live ones
    top_ups_paid: int
    top_ups_paid_amount: Decimal
    top_ups_failed: int
    seconds: int
    clickhouse: str
    free_credit: Decimal  # per self-serve account, as the ledger's configuration grants it


@dataclass(frozen=True)
class Section:
    """A titled block of (label, value) rows: one table of the summary."""

    title: str
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RunReport:
    """Everything the terminal summary and the HTML page show, already computed."""

    run_id: str
    ok: bool  # ClickHouse reconciled with the ledger and the balances are explained
    sections: tuple[Section, ...]
    daily_spend: tuple[tuple[date, Decimal], ...]
    balances: tuple[tuple[str, int], ...]  # histogram bucket -> accounts
    tiers: tuple[tuple[str, int], ...]
    statuses: tuple[tuple[str, int], ...]


# -- gathering --------------------------------------------------------------------------------


def dollars(amount: Decimal) -> str:
    """Exact money for people: ``$12,345.678901`` (never rounded)."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount).quantize(MICRO):,}"


def count_text(counts: Mapping[str, int], order: Sequence[str] = ()) -> str:
    """``a 3, b 1``: known keys in ``order`` first, then the rest by decreasing count."""
    keys = [key for key in order if counts.get(key)]
    keys += sorted((key for key in counts if key not in keys and counts[key]),
                   key=lambda key: (-counts[key], key))
    return ", ".join(f"{key} {counts[key]:,}" for key in keys) or "none"


def tier_changes_after_opening(outputs: Mapping[str, Counter[str]]) -> int:
    """``tier_changed`` events but the one each account opens with (``from_tier`` NULL, the
    ``opened`` detail of OUTPUT_COUNTS_SQL): the figure the report and the dashboard show."""
    changes = outputs.get("tier_changed", Counter())
    return sum(changes.values()) - changes["opened"]


def balance_bucket(balance: Decimal) -> str:
    """The histogram bucket of a credit balance."""
    if balance < 0:
        return "< $0"
    if balance == 0:
        return "$0"
    low = Decimal(0)
    for high in BALANCE_BOUNDS:
        if balance < high:
            return f"${_short(low)}-{_short(high)}"
        low = high
    return f"≥ ${_short(low)}"


def _short(amount: Decimal) -> str:
    """A whole-dollar bound as an axis label: 100, 1k, 10k."""
    return f"{amount // 1000}k" if amount >= 1000 else f"{amount}"


def balance_histogram(balances: Sequence[Decimal]) -> tuple[tuple[str, int], ...]:
    """Accounts per credit-balance bucket, every bucket present, in increasing order."""
    counts = Counter(balance_bucket(balance) for balance in balances)
    buckets = ["< $0", "$0", *(balance_bucket(bound - MICRO) for bound in BALANCE_BOUNDS),
               balance_bucket(BALANCE_BOUNDS[-1])]
    return tuple((bucket, counts.get(bucket, 0)) for bucket in buckets)


def _ordered(counts: Counter[str], order: Sequence[str]) -> tuple[tuple[str, int], ...]:
    keys = [*order, *sorted(set(counts) - set(order))]
    return tuple((key, counts.get(key, 0)) for key in keys)


def summarize(writer: ClickHouseWriter, snapshots: Mapping[str, Mapping[str, Any]],
              facts: RunFacts, dead_letters: Mapping[str, int],
              reconciliation: Reconciliation) -> RunReport:
    """The run's report from ClickHouse and the final snapshots (keyed by account_id).

    ``dead_letters`` counts the dead-letter topic's messages by the field at fault.
    """
    outputs: dict[str, Counter[str]] = {}
    for event_type, detail, count in writer.query(OUTPUT_COUNTS_SQL):
        outputs.setdefault(event_type, Counter())[detail] += count

    def total(event_type: str) -> int:
        return sum(outputs.get(event_type, Counter()).values())

    ((purchases, purchased, invoice_payments, invoices_paid),) = writer.query(CREDITS_SQL)
    ((invoices, invoiced),) = writer.query(INVOICES_SQL)
    ((usage, requests, spend, late, over_limit),) = writer.query(USAGE_SQL)
    purchased, invoices_paid, invoiced, spend = (
        to_money(value or ZERO) for value in (purchased, invoices_paid, invoiced, spend))
    daily = tuple((day, to_money(cost)) for day, cost in writer.query(DAILY_SPEND_SQL))

    accounts = list(snapshots.values())
    models = Counter(f"{a['contract'].replace('_', '-')} {a['billing_model']}" for a in accounts)
    statuses = Counter(a["status"] for a in accounts)
    paused_by = Counter(reason for a in accounts for reason in a["pause_reasons"])
    tiers = Counter(a["tier"] for a in accounts)
    credit = sum((to_money(a["credit_balance"]) for a in accounts), ZERO)
    outstanding = sum((to_money(a["outstanding_balance"]) for a in accounts), ZERO)
    pending = sum(1 for a in accounts if a["pending_top_up_request_id"])
    free_credit = facts.free_credit * sum(1 for a in accounts if a["contract"] == "self_serve")
    # Conservation, summed over all accounts: credit - outstanding = free credit + money in - out.
    unexplained = credit - outstanding - (free_credit + purchased + invoices_paid - spend)

    sections = (
        Section("Run", (
            ("run id", facts.run_id),
            ("workload", f"{facts.accounts:,} accounts, {facts.events:,} events, "
                         f"seed {facts.seed}"),
            ("published", f"{facts.published:,} events ({facts.left_to_processor:,} offline "
                          f"top-up answers left to the live processor, {facts.refused:,} invalid "
                          "refused by the producer)"),
            ("wall time", f"{facts.seconds // 60} min {facts.seconds % 60:02d} s"),
            ("ClickHouse", facts.clickhouse),
        )),
        Section("Accounts (final ledger snapshots)", (
            ("accounts", f"{len(accounts):,}"),
            ("by contract and billing model", count_text(models)),
            ("status", count_text(statuses, STATUS_ORDER)),
            ("pause reasons held at the end", count_text(paused_by)),
            ("final tier", count_text(tiers, TIER_ORDER)),
        )),
        Section("Account events (ClickHouse)", (
            ("pauses, by reason", count_text(outputs.get("usage_paused", Counter()))),
            ("resumes", f"{total('usage_resumed'):,}"),
            ("suspensions", f"{total('account_suspended'):,}"),
            ("reinstatements", f"{total('account_reinstated'):,}"),
            (TIER_CHANGES_LABEL, f"{tier_changes_after_opening(outputs):,}"),
            ("commands rejected, by type", count_text(outputs.get("command_rejected", Counter()))),
        )),
        Section("Top-ups (simulated payment processor)", (
            ("requested", f"{total('top_up_requested'):,}"),
            ("paid", f"{facts.top_ups_paid:,} ({dollars(facts.top_ups_paid_amount)})"),
            ("declined", f"{facts.top_ups_failed:,}"),
            ("still awaiting an answer", f"{pending:,}"),
        )),
        Section("Invoices (ClickHouse)", (
            ("issued", f"{invoices:,}, total {dollars(invoiced)}"),
            ("payments received", f"{invoice_payments:,}, total {dollars(invoices_paid)}"),
        )),
        Section("Money (ClickHouse)", (
            ("in: credits purchased", f"{dollars(purchased)} ({purchases:,} payments)"),
            ("in: invoice payments", dollars(invoices_paid)),
            ("in: free credit granted", dollars(free_credit)),
            ("out: usage spend", f"{dollars(spend)} ({usage:,} usage events, "
                                 f"{requests or 0:,} requests, {late:,} late, "
                                 f"{over_limit:,} {SERVED_WHILE_BLOCKED})"),
            ("ledger credit balances", dollars(credit)),
            ("ledger outstanding balances", dollars(outstanding)),
        )),
        Section("Dead letters", (
            ("total", f"{sum(dead_letters.values()):,}"),
            ("by field at fault", count_text(dead_letters)),
        )),
        Section("Reconciliation: ClickHouse vs the ledger", (
            ("compared", f"{reconciliation.accounts:,} accounts, "
                         f"{reconciliation.invoices:,} invoices, spend rollups"),
            ("differences", f"{len(reconciliation.differences):,}"),
            ("balances = free credit + money in - money out",
             "yes" if not unexplained else f"no, {dollars(unexplained)} unexplained"),
        )),
    )
    return RunReport(facts.run_id, reconciliation.ok and not unexplained, sections, daily,
                     balance_histogram([to_money(a["credit_balance"]) for a in accounts]),
                     _ordered(tiers, TIER_ORDER), _ordered(statuses, STATUS_ORDER))


# -- text -------------------------------------------------------------------------------------


def summary_text(report: RunReport) -> str:
    """The summary as aligned text, one block per section."""
    width = max(len(label) for section in report.sections for label, _ in section.rows)
    lines = [f"Billing demo {report.run_id}: "
             + ("reconciled, zero difference" if report.ok else "DIFFERENCES FOUND")]
    for section in report.sections:
        lines += ["", section.title]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in section.rows]
    return "\n".join(lines)


# -- charts -----------------------------------------------------------------------------------


def _coordinate(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}"


def nice_step(top: Decimal, ticks: int = 4, whole: bool = False) -> Decimal:
    """A round grid step (1, 2 or 5 times a power of ten) giving about ``ticks`` lines to
    ``top``; at least 1 when the values are counts."""
    raw = max(top, Decimal("0.000001")) / ticks
    base = Decimal(1).scaleb(raw.adjusted())
    step = next(base * m for m in (1, 2, 5, 10) if base * m >= raw)
    return max(step, Decimal(1)) if whole else step


def _axis_label(value: Decimal, money: bool) -> str:
    text = f"{value.normalize():,f}"
    return f"${text}" if money else text


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">'
            f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>")


def _grid(left: int, right: int, top: int, bottom: int, axis_top: Decimal, step: Decimal,
          money: bool) -> list[str]:
    """Horizontal grid lines with their labels, from 0 to ``axis_top``."""
    body, value = [], Decimal(0)
    while value <= axis_top:
        y = bottom - (bottom - top) * value / axis_top
        body.append(f'<line x1="{left}" x2="{right}" y1="{_coordinate(y)}" '
                    f'y2="{_coordinate(y)}" class="grid"/>'
                    f'<text x="{left - 6}" y="{_coordinate(y + 4)}" class="axis" '
                    f'text-anchor="end">{html.escape(_axis_label(value, money))}</text>')
        value += step
    return body


def bar_chart(title: str, bars: Sequence[tuple[str, int]], width: int = 520,
              height: int = 280) -> str:
    """Vertical bars with their counts on top and labels below."""
    left, right, top, bottom = 48, width - 12, 16, height - 40
    highest = Decimal(max((count for _, count in bars), default=0))
    step = nice_step(highest, whole=True)
    axis_top = max(step * (highest / step).to_integral_value(ROUND_CEILING), step)
    body = _grid(left, right, top, bottom, axis_top, step, money=False)
    slot = Decimal(right - left) / max(len(bars), 1)
    for index, (label, count) in enumerate(bars):
        bar_height = (bottom - top) * Decimal(count) / axis_top
        x, y = left + slot * index + slot / 8, bottom - bar_height
        center = left + slot * index + slot / 2
        body.append(
            f'<rect x="{_coordinate(x)}" y="{_coordinate(y)}" width="{_coordinate(slot * 3 / 4)}"'
            f' height="{_coordinate(bar_height)}" class="bar">'
            f"<title>{html.escape(label)}: {count:,}</title></rect>"
            f'<text x="{_coordinate(center)}" y="{_coordinate(y - 4)}" class="value" '
            f'text-anchor="middle">{count:,}</text>'
            f'<text x="{_coordinate(center)}" y="{bottom + 18}" class="axis" '
            f'text-anchor="middle">{html.escape(label)}</text>')
    body.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" class="baseline"/>')
    return _svg(width, height, title, body)


Shade = tuple[datetime, datetime | None, str]  # from, to (None: still), what: paused/suspended


def _shades(shaded: Sequence[Shade], first_day: date, span: Decimal, left: int, right: int,
            top: int, bottom: int) -> list[str]:
    """Rectangles behind the line over the times ``shaded``: a point's day is at its x, so a
    moment is at its day's x plus the fraction of the day gone."""
    origin = datetime.combine(first_day, time(), UTC)

    def x_of(moment: datetime | None) -> Decimal:
        if moment is None:
            return Decimal(right)
        days = Decimal(int((moment - origin).total_seconds())) / 86400
        return min(max(left + span * days, Decimal(left)), Decimal(right))

    body = []
    for start, end, what in shaded:
        x1, x2 = x_of(start), x_of(end)
        if x2 <= x1:
            continue
        until = "now" if end is None else f"{end:%Y-%m-%d %H:%M} UTC"
        body.append(f'<rect x="{_coordinate(x1)}" y="{top}" width="{_coordinate(x2 - x1)}" '
                    f'height="{bottom - top}" class="shade-{html.escape(what)}">'
                    f"<title>{html.escape(what)} from {start:%Y-%m-%d %H:%M} UTC to {until}"
                    "</title></rect>")
    return body


def line_chart(title: str, points: Sequence[tuple[date, Decimal]], width: int = 1080,
               height: int = 320, shaded: Sequence[Shade] = (),
               partial_until: datetime | None = None) -> str:
    """Money per day as a line over a shaded area, a dated label about every week; the times
    ``shaded`` (paused, suspended) behind it; ``partial_until``: the last day's data ends then,
    so its point is hollow, the line to it dashed and labelled "partial day"."""
    left, right, top, bottom = 84, width - 16, 16, height - 40
    if not points:
        return _svg(width, height, title, [
            f'<text x="{width // 2}" y="{height // 2}" class="axis" text-anchor="middle">'
            "no usage</text>"])
    highest = max(value for _, value in points)
    step = nice_step(highest)
    axis_top = max(step * (highest / step).to_integral_value(ROUND_CEILING), step)
    span = Decimal(right - left) / max(len(points) - 1, 1)
    coordinates, marks = [], []
    for index, (day, value) in enumerate(points):
        x = left + span * index if len(points) > 1 else Decimal(left + right) / 2
        y = bottom - (bottom - top) * value / axis_top
        coordinates.append(f"{_coordinate(x)},{_coordinate(y)}")
        partial = partial_until is not None and index == len(points) - 1
        note = f" (partial day: data ends {partial_until:%H:%M} UTC)" if partial else ""
        marks.append(f'<circle cx="{_coordinate(x)}" cy="{_coordinate(y)}" r="3" '
                     f'class="dot{" partial" if partial else ""}">'
                     f"<title>{day:%a %Y-%m-%d}: {html.escape(dollars(value))}{note}</title>"
                     "</circle>")
        if partial:
            marks.append(f'<text x="{_coordinate(x)}" y="{_coordinate(y - 8)}" class="axis" '
                         'text-anchor="end">partial day</text>')
        if index % 7 == 0:
            marks.append(f'<text x="{_coordinate(x)}" y="{bottom + 18}" class="axis" '
                         f'text-anchor="middle">{day:%Y-%m-%d}</text>')
    first_x, last_x = coordinates[0].split(",")[0], coordinates[-1].split(",")[0]
    solid = coordinates[:-1] if partial_until is not None and len(coordinates) > 1 else coordinates
    lines = [f'<polygon points="{first_x},{bottom} {" ".join(coordinates)} '
             f'{last_x},{bottom}" class="area"/>',
             f'<polyline points="{" ".join(solid)}" class="line"/>']
    if solid is not coordinates:
        lines.append(f'<polyline points="{" ".join(coordinates[-2:])}" class="line dashed"/>')
    return _svg(width, height, title, [
        *_shades(shaded, points[0][0], span, left, right, top, bottom), *lines,
        *_grid(left, right, top, bottom, axis_top, step, money=True), *marks,
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" class="baseline"/>'])


# -- the page ---------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
       margin: 24px auto; max-width: 1120px; padding: 0 16px; background: #f7f8fa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 8px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; }
.ok { background: #d6f5e3; color: #11643a; } .bad { background: #fde2e1; color: #9b1c1c; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e1e5ea; border-radius: 8px; padding: 14px 16px; }
.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; }
td { padding: 3px 6px; border-top: 1px solid #eef1f4; vertical-align: top; }
td:first-child { color: #52606d; width: 42%; }
svg { max-width: 100%; height: auto; }
svg .grid { stroke: #e4e7eb; } svg .baseline { stroke: #9aa5b1; }
svg .axis { font-size: 11px; fill: #616e7c; } svg .value { font-size: 11px; fill: #1f2933; }
svg .bar { fill: #3d7dd8; } svg .line { fill: none; stroke: #3d7dd8; stroke-width: 2; }
svg .area { fill: #3d7dd8; fill-opacity: 0.12; } svg .dot { fill: #3d7dd8; }
svg .dot.partial { fill: #fff; stroke: #3d7dd8; stroke-width: 2; }
svg .line.dashed { stroke-dasharray: 5 4; }
svg .shade-paused { fill: #f0b429; fill-opacity: 0.22; }
svg .shade-suspended { fill: #d64545; fill-opacity: 0.16; }
"""


def _table(section: Section) -> str:
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(value)}</td></tr>"
                   for label, value in section.rows)
    return f'<div class="card"><h2>{html.escape(section.title)}</h2><table>{rows}</table></div>'


def _chart_card(title: str, svg: str, wide: bool = False) -> str:
    return (f'<div class="card{" wide" if wide else ""}"><h2>{html.escape(title)}</h2>'
            f"{svg}</div>")


def render_html(report: RunReport) -> str:
    """The report as one HTML document: styles inline, charts as inline SVG, no scripts."""
    verdict = ('<span class="verdict ok">reconciled: zero difference</span>' if report.ok else
               '<span class="verdict bad">differences found</span>')
    charts = [
        _chart_card("Spend per day (UTC, from ClickHouse spend_daily)",
                    line_chart("Spend per day", report.daily_spend), wide=True),
        _chart_card("Credit balance at the end (accounts)",
                    bar_chart("Credit balance distribution", report.balances)),
        _chart_card("Final tier (accounts)", bar_chart("Tier distribution", report.tiers)),
        _chart_card("Final status (accounts)", bar_chart("Status distribution", report.statuses)),
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Billing demo {html.escape(report.run_id)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Billing demo {html.escape(report.run_id)}</h1>",
        f"<p>{verdict} ClickHouse (written by the sink) against the ledger's own account "
        "snapshots, to the micro-dollar.</p>",
        '<div class="grid2">', *charts, *map(_table, report.sections), "</div>",
        "</body></html>",
    ])


def write_html(report: RunReport, path: Path) -> Path:
    """Write the report page to ``path`` (directories created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
