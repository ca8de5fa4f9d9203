"""The worker's account pages, on Faust's web server: the current state of one account, and may it
send now, answered from the worker's own table in milliseconds.

- ``GET /accounts/{account_id}``: the account's status record (the snapshot, ``may_send``,
  ``blocked_reasons``, ``updated_at``, ``version``), as on ``billing.account-status``;
- ``GET /accounts/{account_id}/may-send``: the decision (``allowed``, ``reason``, limits,
  balance).

Money is a string, times are ISO-8601 with ``Z``. A request for an account another worker owns is
forwarded to that worker by Faust's table routing (``app.table_route``: the owner of the account's
partition, found from the group's assignment). An unknown account is 404. The server binds
loopback by default; bound elsewhere it needs a token (the dashboard's rules,
``runtime/web_auth.py``: ``Authorization: Bearer <token>``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from billing.account_record import AccountEntry, status_version
from billing.account_status import decide, status_record
from billing.events import to_jsonable
from billing.ledger import from_millis, snapshot
from runtime.web_auth import TokenCheck

TOKEN_VARIABLE = "BILLING_WORKER_WEB_TOKEN"


def account_status(entry: AccountEntry) -> dict[str, Any]:
    """The status record of a stored account, as the worker publishes it."""
    return status_record(snapshot(entry.state), from_millis(entry.state.last_event_ms),
                         status_version(entry))


def install_account_views(app: Any, table: Any,
                          read_entry: Callable[[bytes], AccountEntry | None],
                          token: str | None) -> None:
    """Register the account pages on ``app`` (a Faust app), routed by ``table``'s partitions;
    ``read_entry`` gives an account's newest state (committed or not)."""
    check = TokenCheck(token) if token else None

    def denied(view: Any, request: Any) -> Any | None:
        if check is None or check.allows(request.headers.get("Authorization"), None):
            return None
        return view.json({"error": "a token is required: Authorization: Bearer <token>"},
                         status=401)

    def answer(view: Any, request: Any, account_id: str,
               shape: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
        refused = denied(view, request)
        if refused is not None:
            return refused
        entry = read_entry(account_id.encode())
        if entry is None:
            return view.json({"account_id": account_id, "error": "unknown account"}, status=404)
        return view.json(to_jsonable(shape(account_status(entry))))

    @app.page("/accounts/{account_id}")
    @app.table_route(table=table, match_info="account_id")
    async def account(view: Any, request: Any, account_id: str) -> Any:
        return answer(view, request, account_id, lambda record: record)

    @app.page("/accounts/{account_id}/may-send")
    @app.table_route(table=table, match_info="account_id")
    async def may_send(view: Any, request: Any, account_id: str) -> Any:
        def decision(record: dict[str, Any]) -> dict[str, Any]:
            return {"account_id": account_id, **asdict(decide(record))}
        return answer(view, request, account_id, decision)
