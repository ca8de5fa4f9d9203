"""The dashboard's web application (aiohttp): read-only pages, JSON, a health check.

Routes (GET and HEAD only; any other method is 405):

- ``/``: totals, charts and the top accounts; ``/?q=TEXT`` lists the accounts whose id contains it
- ``/accounts?status=suspended`` (or ``budget=80``, ``invoices=unpaid|overdue``; ``offset=N``):
  one page of a list, with how many there are in all
- ``/accounts/{account_id}``: one account (404 page when ClickHouse has never seen it)
- ``/api/totals``, ``/api/accounts?...``, ``/api/accounts/{account_id}``: the same figures as
  JSON, money as strings
- ``/healthz``: ``ok`` when ClickHouse answers (never needs the token)

ClickHouse connections are not thread-safe and queries block, so every query runs on one worker
thread of the app's own: the event loop stays free (``/healthz`` answers while a page is being
computed) and the connection is only ever used by one thread at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from billing.events import dumps
from dashboard.data import (
    BUDGET_THRESHOLDS,
    INVOICE_FILTERS,
    STATUS_FILTERS,
    AccountList,
    AccountView,
    DashboardData,
    DashboardDataError,
    ListFilter,
    Totals,
)
from dashboard.pages import (
    render_account,
    render_home,
    render_list,
    render_message,
    render_not_found,
)
from runtime.logfmt import log_event
from runtime.web_auth import COOKIE_NAME, QUERY_PARAMETER, TokenCheck, is_loopback
from sinks.clickhouse import ClickHouseError

log = logging.getLogger("dashboard")

DATA = web.AppKey("data", DashboardData)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
SOURCE = web.AppKey("source", str)
TOP_ACCOUNTS = 25
MAX_SEARCH_LENGTH = 100
MAX_OFFSET = 10_000_000
# What a list may be filtered on, and the values allowed (budget: any whole percent up to this).
LIST_VALUES = {"status": STATUS_FILTERS, "invoices": INVOICE_FILTERS}
MAX_BUDGET_PERCENT = 1000
# Nothing may load from elsewhere or run: styles are inline, charts inline SVG, no scripts.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessLog(AbstractAccessLogger):
    """One ``event=dashboard.request`` line per request: the path without its query string, so
    a ``?token=`` never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log_event(self.logger, "dashboard.request", method=request.method, path=request.path,
                  status=response.status, ms=round(time * 1000))


async def _run(request: web.Request, query: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking query on the app's ClickHouse thread."""
    return await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], query, *args)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(value), status=status, content_type="application/json")


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _failure(request: web.Request, status: int, title: str, message: str) -> web.Response:
    if _wants_json(request):
        return _json({"error": message}, status)
    return _html(render_message(title, message), status)


# -- handlers ---------------------------------------------------------------------------------


def as_json(figures: Totals | AccountView | AccountList) -> dict[str, Any]:
    """The figures as a JSON object: days of spend as ``{"day", "cost"}`` objects (``dumps``
    writes money as exact strings)."""
    value = asdict(figures)
    if isinstance(figures, AccountList):
        return value
    return {**value,
            "daily_spend": [{"day": day, "cost": cost} for day, cost in figures.daily_spend]}


def _search(request: web.Request) -> str:
    return request.query.get("q", "").strip()[:MAX_SEARCH_LENGTH]


def list_filter(query: Mapping[str, str]) -> tuple[ListFilter, int]:
    """The list a request asks for and where its page starts; 400 for anything else (one filter
    at most: ``status``, ``budget`` or ``invoices``)."""
    given = [name for name in ("status", "budget", "invoices") if name in query]
    offset = query.get("offset", "0")
    if not offset.isdigit() or int(offset) > MAX_OFFSET:
        raise web.HTTPBadRequest(reason="offset must be a whole number")
    if not given:
        return ListFilter("status", ""), int(offset)
    if len(given) > 1:
        raise web.HTTPBadRequest(reason="one of status, budget, invoices at a time")
    kind, value = given[0], query[given[0]]
    allowed = LIST_VALUES.get(kind)
    if allowed is not None and value not in allowed:
        raise web.HTTPBadRequest(reason=f"{kind} is one of {', '.join(allowed)}")
    if allowed is None and not (value.isdigit() and 0 < int(value) <= MAX_BUDGET_PERCENT):
        raise web.HTTPBadRequest(
            reason=f"budget is a percent from 1 to {MAX_BUDGET_PERCENT} "
                   f"(e.g. {', '.join(map(str, BUDGET_THRESHOLDS))})")
    return ListFilter(kind, str(int(value)) if allowed is None else value), int(offset)


async def home(request: web.Request) -> web.Response:
    data, search = request.app[DATA], _search(request)
    totals = await _run(request, data.totals)
    accounts = await _run(request, data.accounts, search, TOP_ACCOUNTS)
    return _html(render_home(totals, accounts, search, request.app[SOURCE]))


async def account_list(request: web.Request) -> web.Response:
    item, offset = list_filter(request.query)
    return _html(render_list(await _run(request, request.app[DATA].account_list, item, offset)))


async def api_account_list(request: web.Request) -> web.Response:
    item, offset = list_filter(request.query)
    return _json(as_json(await _run(request, request.app[DATA].account_list, item, offset)))


async def account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    view = await _run(request, request.app[DATA].account, account_id)
    if view is None:
        return _html(render_not_found(account_id), 404)
    return _html(render_account(view))


async def api_totals(request: web.Request) -> web.Response:
    return _json(as_json(await _run(request, request.app[DATA].totals)))


async def api_account(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    view = await _run(request, request.app[DATA].account, account_id)
    if view is None:
        return _json({"error": f"unknown account {account_id!r}"}, 404)
    return _json(as_json(view))


async def healthz(request: web.Request) -> web.Response:
    await _run(request, request.app[DATA].check_tables)
    return web.Response(text="ok\n")


# -- middlewares ------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response, errors included, with the headers that keep pages self-contained."""
    try:
        response = await handler(request)
    except web.HTTPException as error:  # 404 of an unknown path, 405 of a POST
        response = _failure(request, error.status, error.reason, error.reason)
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def clickhouse_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ClickHouse down, refusing, or without the tables: a 503 saying so, not a traceback."""
    try:
        return await handler(request)
    except (ClickHouseError, DashboardDataError) as error:
        log_event(log, "dashboard.clickhouse_error", logging.WARNING, path=request.path,
                  error=error)
        return _failure(request, 503, "ClickHouse unavailable", f"ClickHouse: {error}")


@web.middleware
async def loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without a token, answer only requests addressed to a loopback name: a web page whose
    domain an attacker resolves to 127.0.0.1 (DNS rebinding) sends its own name as Host, and
    must not be able to read the dashboard from a visitor's browser."""
    if not is_loopback(request.url.host or ""):
        return _failure(request, 421, "Misdirected request",
                        "Without a token this dashboard answers only to localhost, 127.0.0.1 "
                        "or [::1].")
    return await handler(request)


def token_required(check: TokenCheck) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every request but ``/healthz`` needs the bearer token or the cookie; ``?token=`` sets the
    cookie and redirects to the same address without it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        given = request.query.get(QUERY_PARAMETER)
        if given is not None and check.is_token(given):
            query = request.rel_url.query.copy()
            del query[QUERY_PARAMETER]
            response = web.Response(status=303, headers={
                "Location": str(request.rel_url.with_query(query))})
            response.set_cookie(COOKIE_NAME, check.cookie_value, path="/", httponly=True,
                                samesite="Strict")
            return response
        if given is None and check.allows(request.headers.get("Authorization"),
                                          request.cookies.get(COOKIE_NAME)):
            return await handler(request)
        response = _failure(request, 401, "Token required",
                            "This dashboard needs its token: send `Authorization: Bearer "
                            "<token>`, or open it once as /?token=<token>.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="billing-dashboard"'
        return response

    return middleware


# -- the application --------------------------------------------------------------------------


def build_app(data: DashboardData, source: str, token: str | None = None) -> web.Application:
    """The dashboard over ``data``; ``source`` names the ClickHouse it reads (shown on the page),
    ``token`` (if any) is required on every request but ``/healthz``."""
    middlewares: list[Any] = [security_headers]
    middlewares.append(loopback_names_only if token is None
                       else token_required(TokenCheck(token)))
    middlewares.append(clickhouse_errors)
    app = web.Application(middlewares=middlewares)
    app[DATA] = data
    app[SOURCE] = source
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-clickhouse")

    async def stop_executor(app: web.Application) -> None:
        app[EXECUTOR].shutdown(wait=True)

    app.on_cleanup.append(stop_executor)
    app.router.add_get("/", home)
    app.router.add_get("/accounts", account_list)
    app.router.add_get("/accounts/{account_id}", account)
    app.router.add_get("/api/totals", api_totals)
    app.router.add_get("/api/accounts", api_account_list)
    app.router.add_get("/api/accounts/{account_id}", api_account)
    app.router.add_get("/healthz", healthz)
    return app
