"""The dashboard's HTML: whole pages rendered on the server, charts as inline SVG, no scripts.

The machine serving it may be offline and the page shows money, so it loads nothing from
anywhere (no CDN, no JavaScript; the Content-Security-Policy of ``app.py`` forbids both). Charts,
money formatting and the base style are the demo report's (``dashboard.report``), so both pages
look and count alike. Every value that comes from data is escaped (``html.escape``): account ids,
reasons and payment ids are whatever producers sent.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from urllib.parse import quote

from dashboard.data import (
    BUDGET_THRESHOLDS,
    DAILY_WINDOW_DAYS,
    INVOICE_FILTERS,
    PAGE_SIZE,
    SUSPENDED,
    AccountList,
    AccountView,
    ListFilter,
    Record,
    SendState,
    Totals,
    is_partial,
)
from dashboard.report import (
    SERVED_WHILE_BLOCKED,
    STATUS_ORDER,
    STYLE,
    TIER_CHANGES_LABEL,
    TIER_ORDER,
    bar_chart,
    count_text,
    dollars,
    line_chart,
)
from sinks.display import format_money

EXTRA_STYLE = """
header { display: flex; align-items: center; justify-content: space-between; gap: 16px;
         margin-bottom: 8px; }
header a { color: #1f2933; text-decoration: none; font-weight: 600; }
form input[type=search] { padding: 5px 8px; border: 1px solid #cbd2d9; border-radius: 6px;
                          width: 260px; }
form button { padding: 5px 12px; border: 1px solid #3d7dd8; border-radius: 6px;
              background: #3d7dd8; color: #fff; }
.grid3 { display: grid; grid-template-columns: repeat(3, 1fr); gap: 16px; margin-top: 16px; }
.muted { color: #616e7c; }
.warn { background: #fff1c2; color: #8a5a00; }
table.list th { text-align: left; color: #52606d; font-weight: 600; padding: 3px 6px; }
table.list td:first-child { width: auto; color: inherit; }
table.list td.num, table.list th.num { text-align: right; font-variant-numeric: tabular-nums; }
.meter { background: #e4e7eb; border-radius: 4px; height: 8px; margin-top: 4px; }
.meter div { background: #3d7dd8; border-radius: 4px; height: 8px; max-width: 100%; }
.meter .over { background: #d64545; }
a { color: #2f6fca; }
.banner { font-size: 17px; font-weight: 600; padding: 10px 14px; border-radius: 8px;
          margin: 8px 0 0; }
.pager { display: flex; gap: 16px; margin-top: 8px; }
"""
STATUS_CLASS = {"active": "ok", "paused": "warn", "suspended": "bad"}
# The event fields shown in the events list, in this order, when the event has them.
EVENT_DETAIL_FIELDS = ("reason", "amount", "payment_id", "invoice_id", "period", "from_tier",
                       "to_tier", "rpm_limit", "tpm_limit", "monthly_budget",
                       "applied_to_outstanding", "applied_to_credit", "rejected_type")


class Html(str):
    """Text that is already HTML (built here from escaped parts): not escaped again."""


def _e(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def money(amount: Decimal | None) -> Html:
    """Dollars to the cent with thousands separators (``$1,234.57``), the exact amount on hover;
    a dash for none (no budget)."""
    if amount is None:
        return Html("—")
    return Html(f'<span class="money" title="{_e(dollars(amount))}">'
                f"{_e(format_money(amount))}</span>")


def moment(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def account_href(account_id: str) -> str:
    """The account page's path; the id is percent-encoded whole (it may hold ``/`` or ``?``)."""
    return "/accounts/" + quote(account_id, safe="")


def list_href(item: ListFilter, offset: int = 0) -> str:
    """The list page of ``item`` (from ``offset``)."""
    query = "&".join(part for part in (item.query, f"offset={offset}" if offset else "") if part)
    return "/accounts" + (f"?{query}" if query else "")


def link(href: str, text: object) -> Html:
    return Html(f'<a href="{_e(href)}">{_e(text)}</a>')


def _cell(value: object, numeric: bool = False) -> str:
    return f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


def key_values(title: str, rows: Iterable[tuple[str, str]], extra_html: str = "") -> str:
    """A card of label/value lines (both escaped here) and optional ready-made HTML."""
    body = "".join(f"<tr><td>{_e(label)}</td><td>{_e(value)}</td></tr>" for label, value in rows)
    return f'<div class="card"><h2>{_e(title)}</h2><table>{body}</table>{extra_html}</div>'


def list_table(headers: Sequence[str], rows: Iterable[Sequence[str]],
               numeric: Sequence[bool]) -> str:
    """A table of already formatted cells (escaped here); numeric columns right-aligned."""
    head = "".join(f'<th class="num">{_e(name)}</th>' if right else f"<th>{_e(name)}</th>"
                   for name, right in zip(headers, numeric, strict=True))
    body = "".join("<tr>" + "".join(_cell(value, right)
                                    for value, right in zip(row, numeric, strict=True)) + "</tr>"
                   for row in rows)
    return f'<table class="list"><tr>{head}</tr>{body}</table>'


def card(title: str, inner_html: str, wide: bool = True) -> str:
    return (f'<div class="card{" wide" if wide else ""}"><h2>{_e(title)}</h2>'
            f"{inner_html}</div>")


def status_badge(status: str, pause_reasons: Sequence[str] = ()) -> Html:
    """The status and the pause reasons, worded as the can-send banner words them ("suspended;
    paused: credits_exhausted"): a suspension has its own reason, which the pause reasons are
    not, so they are never shown as if they were."""
    paused = f"paused: {', '.join(pause_reasons)}" if pause_reasons else ""
    text = (paused or status) if status == "paused" else \
        "; ".join(part for part in (status, paused) if part)
    return Html(f'<span class="verdict {STATUS_CLASS.get(status, "warn")}">{_e(text)}</span>')


def send_text(state: SendState) -> str:
    """Whether the account can send now, and if not why and since when: ``Cannot send:
    suspended (free_credit_exhausted) since 2026-01-12 14:03 UTC; paused: credits_exhausted
    since 2026-01-12 14:03 UTC``."""
    if state.may_send:
        return "Can send"
    parts = []
    for blocker in state.blockers:
        since = f" since {minute(blocker.since)}" if blocker.since else ""
        if blocker.reason == SUSPENDED:
            parts.append(f"suspended{f' ({blocker.detail})' if blocker.detail else ''}{since}")
        else:
            parts.append(f"paused: {blocker.reason}{since}")
    return "Cannot send: " + ("; ".join(parts) or state.status)


def send_banner(state: SendState) -> Html:
    return Html(f'<p class="banner {"ok" if state.may_send else "bad"}">'
                f"{_e(send_text(state))}</p>")


def page(title: str, body: Sequence[str], search: str = "") -> str:
    """A whole document: style inline, a header with the search form, no scripts."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<style>{STYLE}{EXTRA_STYLE}</style></head><body>",
        '<header><a href="/">Billing dashboard</a>'
        '<form method="get" action="/"><input type="search" name="q" '
        f'placeholder="account id contains…" value="{_e(search)}" aria-label="account id"> '
        "<button>Search</button></form></header>",
        *body,
        "</body></html>",
    ])


# -- home -------------------------------------------------------------------------------------


def _ordered(counts: Mapping[str, int], order: Sequence[str]) -> list[tuple[str, int]]:
    return [(key, counts.get(key, 0)) for key in [*order, *sorted(set(counts) - set(order))]]


def _account_cell(account_id: str) -> str:
    return f"<td>{link(account_href(account_id), account_id)}</td>"


def _accounts_table(accounts: Sequence[Record]) -> str:
    if not accounts:
        return '<p class="muted">No account matches.</p>'
    rows = "".join(
        f'<tr>{_account_cell(row["account_id"])}'
        f'<td>{status_badge(row["status"], row["pause_reasons"])}</td>'
        + "".join(_cell(row[key]) for key in ("tier", "billing_model", "contract"))
        + _cell(f'{row["usage_events"]:,}', numeric=True)
        + _cell(money(row["lifetime_spend"]), numeric=True) + "</tr>"
        for row in accounts)
    return ('<table class="list"><tr><th>account</th><th>status</th><th>tier</th>'
            '<th>billing model</th><th>contract</th><th class="num">usage events</th>'
            f'<th class="num">lifetime spend</th></tr>{rows}</table>')


def _status_links(by_status: Mapping[str, int]) -> Html:
    """``active 19, paused 1, suspended 5``, each count a link to its list."""
    return Html(", ".join(link(list_href(ListFilter("status", status)), f"{status} {count:,}")
                          for status, count in _ordered(by_status, STATUS_ORDER)))


def _list_title(item: ListFilter, open_month: str, as_of: str) -> str:
    if item.kind == "budget":
        return f"Accounts that used ≥ {item.value} % of their monthly budget in {open_month}"
    if item.kind == "invoices":
        return (f"Overdue invoices (due before {as_of})" if item.value == "overdue"
                else "Unpaid invoices")
    return f"{item.value.capitalize()} accounts" if item.value else "All accounts"


def render_home(totals: Totals, accounts: Sequence[Record], search: str, source: str) -> str:
    """Totals over every account, charts, and the top accounts (or those matching ``search``)."""
    events = totals.account_events
    lists = [(f"budget used ≥ {percent} % ({totals.open_month})",
              ListFilter("budget", str(percent))) for percent in BUDGET_THRESHOLDS]
    lists += [(f"{kind} invoices", ListFilter("invoices", kind)) for kind in INVOICE_FILTERS]
    cards = [
        key_values("Accounts (latest snapshots)", [
            ("accounts", link("/accounts", f"{totals.accounts:,}")),
            ("status", _status_links(totals.accounts_by_status)),
            ("billing model", count_text(totals.accounts_by_billing_model)),
        ]),
        key_values("Lists for support", [
            (label, link(list_href(item), f"{totals.list_counts[item.query]:,}"))
            for label, item in lists]),
        key_values("Usage (rated_usage)", [
            ("spend", money(totals.usage_spend)),
            ("usage events", f"{totals.usage_events:,}"),
            ("requests", f"{totals.usage_requests:,}"),
            ("late", f"{totals.late_usage_events:,}"),
            (SERVED_WHILE_BLOCKED, f"{totals.over_limit_usage_events:,}"),
        ]),
        key_values("Money", [
            ("credits purchased", Html(f"{money(totals.credits_purchased)} "
                                       f"({totals.credit_purchases:,} payments)")),
            ("invoices issued", Html(f"{money(totals.invoiced)} "
                                     f"({totals.invoices_issued:,})")),
            ("invoice payments", Html(f"{money(totals.invoice_payments_amount)} "
                                      f"({totals.invoice_payments:,})")),
            ("net balance now (credit - outstanding)", money(totals.net_balance)),
        ]),
        key_values("Account events", [
            ("pauses, by reason", count_text(totals.pauses_by_reason)),
            ("resumes", f"{events.get('usage_resumed', 0):,}"),
            ("suspensions / reinstatements", f"{events.get('account_suspended', 0):,} / "
                                             f"{events.get('account_reinstated', 0):,}"),
            ("top-ups requested", f"{events.get('top_up_requested', 0):,}"),
            (TIER_CHANGES_LABEL, f"{totals.tier_changes_after_opening:,}"),
            ("commands rejected", f"{events.get('command_rejected', 0):,}"),
        ]),
        card("Accounts by status", bar_chart("Accounts by status", _ordered(
            totals.accounts_by_status, STATUS_ORDER), width=360, height=220), wide=False),
        card("Accounts by tier", bar_chart("Accounts by tier", _ordered(
            totals.accounts_by_tier, TIER_ORDER), width=360, height=220), wide=False),
    ]
    heading = (f"Accounts whose id contains “{search}”" if search
               else "Top accounts by lifetime spend")
    partial = totals.data_end if is_partial_series(totals.daily_spend, totals.data_end) else None
    return page("Billing dashboard", [
        "<h1>Totals</h1>",
        f'<p class="muted">Read-only, from ClickHouse at {_e(source)}.</p>',
        '<div class="grid3">', *cards, "</div>",
        '<div class="grid2">',
        card("Spend per day, all accounts (UTC, spend_daily)",
             line_chart("Spend per day", totals.daily_spend, partial_until=partial)),
        card(heading, _accounts_table(accounts)),
        "</div>",
    ], search)


def is_partial_series(points: Sequence[tuple[date, Decimal]], data_end: datetime | None
                      ) -> bool:
    return is_partial(points[-1][0] if points else None, data_end)


# -- lists ------------------------------------------------------------------------------------


def _invoice_rows(rows: Sequence[Record]) -> str:
    return list_table(
        ["account", "invoice", "month", "amount", "paid", "unpaid", "status", "due",
         "days overdue"],
        [[link(account_href(r["account_id"]), r["account_id"]), r["invoice_id"], r["period"],
          money(r["amount"]), money(r["amount_paid"]), money(r["unpaid"]), r["status"],
          r["due_date"] or "—", f"{r['days_overdue']:,}"] for r in rows],
        [False, False, False, True, True, True, False, False, True])


def _budget_rows(rows: Sequence[Record]) -> str:
    return list_table(
        ["account", "status", "tier", "spend in the month", "monthly budget", "used"],
        [[link(account_href(r["account_id"]), r["account_id"]), status_badge(r["status"]),
          r["tier"], money(r["spend"]), money(r["monthly_budget"]),
          f"{r['percent_used'].quantize(Decimal('0.1'))} %"] for r in rows],
        [False, False, False, True, True, True])


def render_list(found: AccountList) -> str:
    """One page of a list, with how many rows there are in all and links to the other pages."""
    item = found.filter
    title = _list_title(item, found.open_month, found.as_of.isoformat())
    if not found.rows:
        table = '<p class="muted">None.</p>'
    elif item.kind == "invoices":
        table = _invoice_rows(found.rows)
    elif item.kind == "budget":
        table = _budget_rows(found.rows)
    else:
        table = _accounts_table(found.rows)
    last = found.offset + len(found.rows)
    shown = (f"{found.offset + 1:,} to {last:,} of {found.total:,}" if found.rows
             else f"0 of {found.total:,}")
    pager = []
    if found.offset > 0:
        pager.append(link(list_href(item, max(found.offset - PAGE_SIZE, 0)), "← previous"))
    if last < found.total:
        pager.append(link(list_href(item, last), "next →"))
    return page(title, [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(shown)}{"" if item.kind == "invoices" else " accounts"}; '
        f'{_e(LIST_SOURCES[item.kind])}</p>',
        card(f"{title} ({shown})", table + f'<div class="pager">{"".join(pager)}</div>'),
    ])


LIST_SOURCES = {
    "status": "status from each account's latest snapshot, lifetime spend from rated_usage.",
    "budget": "spend in the latest billed month from rated_usage, budget from the latest "
              "snapshot (sinks/queries/accounts_near_budget.sql).",
    "invoices": "issued invoices with what is still unpaid after their latest invoice_settled "
                "event; overdue: due before today (UTC).",
}


# -- one account ------------------------------------------------------------------------------


def _budget_meter(percent: Decimal | None) -> str:
    if percent is None:
        return ""
    width = min(percent, Decimal(100))
    over = " over" if percent >= 100 else ""
    return f'<div class="meter"><div class="{over.strip()}" style="width: {width}%"></div></div>'


def _event_detail(event: Record) -> str:
    if event["type"] == "tier_changed" and event["from_tier"] is None:
        return f"opened at tier {event['to_tier']}"
    parts = []
    for name in EVENT_DETAIL_FIELDS:
        value = event[name]
        if value is not None:
            parts.append(f"{name.replace('_', ' ')} "
                         f"{format_money(value) if isinstance(value, Decimal) else value}")
    return ", ".join(parts)


def render_account(view: AccountView) -> str:
    """One account: can it send, balance, status, limits, spend over time, invoices, events."""
    snap = view.snapshot
    auto_top_up = (Html(f"on: {money(snap['auto_top_up_amount'])} when the balance is at or "
                        f"below {money(snap['auto_top_up_minimum_balance'])}")
                   if snap["auto_top_up_enabled"] else "off")
    # Status and pause reasons as the can-send state has them: accounts_current is newer than
    # the latest event's snapshot when a reason lapsed without an event (a month rolling over).
    status = view.send.status
    reasons = [blocker.reason for blocker in view.send.blockers if blocker.reason != SUSPENDED]
    limits = (f"{snap['rpm_limit']:,} requests/min, {snap['tpm_limit']:,} tokens/min"
              + ("" if view.send.may_send else " (not in force: it cannot send)"))
    cards = [
        key_values("Balance", [
            ("net balance now (credit - outstanding)", money(view.net_balance)),
            ("credit balance at the last account event", money(snap["credit_balance"])),
            ("outstanding at the last account event", money(snap["outstanding_balance"])),
            ("usage charged since", money(view.usage_since_snapshot)),
            ("last account event", f"{snap['last_event_type']}, {moment(snap['as_of'])}"),
        ]),
        key_values("Status and limits", [
            ("can send now", send_text(view.send)),
            ("status", status),
            ("pause reasons", ", ".join(reasons) or "none"),
            ("tier", snap["tier"]),
            ("rate limits", limits),
            ("monthly budget", money(snap["monthly_budget"])),
        ]),
        key_values("Spend", [
            ("lifetime spend", money(view.lifetime_spend)),
            ("lifetime credits purchased (at the last event)",
             money(snap["lifetime_credits_purchased"])),
            (f"billed to {view.open_month} (the latest billed month)",
             money(view.open_month_spend)),
            ("of the monthly budget", "no budget" if view.budget_used_percent is None
             else f"{view.budget_used_percent}%"),
        ], _budget_meter(view.budget_used_percent)),
        key_values("Account", [
            ("billing model", snap["billing_model"]),
            ("contract", snap["contract"]),
            ("payment method", "on file" if snap["has_payment_method"] else "none"),
            ("auto top-up", auto_top_up),
            ("top-up pending", snap["pending_top_up_request_id"] or "no"),
        ]),
    ]
    months = list_table(
        ["billed month", "events", "requests", "late", SERVED_WHILE_BLOCKED, "spend"],
        [[m["billed_period"], f"{m['events']:,}", f"{m['requests']:,}", f"{m['late_events']:,}",
          f"{m['over_limit_events']:,}", money(m["cost"])] for m in view.months],
        [False, True, True, True, True, True])
    products = list_table(["product", "spend"], [[product, money(cost)] for product, cost
                                                 in view.spend_by_product.items()], [False, True])
    invoices = list_table(
        ["invoice", "month", "amount", "issued", "paid by invoice payments"],
        [[i["invoice_id"], i["period"], money(i["amount"]), moment(i["issued_at"]),
          money(i["paid_by_invoice_payments"])] for i in view.invoices],
        [False, False, True, False, True]) if view.invoices else '<p class="muted">None.</p>'
    events = list_table(
        ["time", "event", "details", "status after", "credit after", "outstanding after"],
        [[moment(e["timestamp"]), e["type"], _event_detail(e), e["status_after"],
          money(e["credit_balance_after"]), money(e["outstanding_balance_after"])]
         for e in view.events],
        [False, False, False, False, True, True])
    shown = (f"the last {len(view.events)} of {sum(view.event_counts.values()):,}: "
             if view.events else "")
    shades = [(period.start, period.end, period.status) for period in view.blocked_periods]
    chart = line_chart(f"Spend per day of {view.account_id}", view.daily_spend, shaded=shades,
                       partial_until=view.data_end if view.partial_last_day else None)
    return page(f"Account {view.account_id}", [
        f"<h1>Account {_e(view.account_id)} {status_badge(status, reasons)}</h1>",
        send_banner(view.send),
        f'<p class="muted">Can send, status and pause reasons: from {_e(view.send.source)} as '
        f"of {_e(moment(view.send.as_of))}; since when: the account's pause and suspension "
        "events. "
        "Tier and limits are the latest account snapshot; spend is rated usage (hover an amount "
        "for its exact value).</p>",
        '<div class="grid2">', *cards,
        card(f"Spend per day (UTC, up to {DAILY_WINDOW_DAYS} days to where the data ends; "
             "shaded: paused in amber, suspended in red)", chart),
        card("Spend per billed month", months, wide=False),
        card("Spend per product (same days as the chart)", products, wide=False),
        card("Invoices", invoices),
        card(f"Account events ({shown}{count_text(view.event_counts)})", events),
        "</div>",
    ])


def render_message(title: str, message: str, search: str = "") -> str:
    """A page that only says something: not found, unauthorized, ClickHouse unavailable."""
    return page(title, [f"<h1>{_e(title)}</h1>", f"<p>{_e(message)}</p>",
                        '<p><a href="/">All accounts</a></p>'], search)


def render_not_found(account_id: str) -> str:
    return render_message("Account not found",
                          f"ClickHouse has no account-state event for account {account_id!r}.",
                          account_id)
