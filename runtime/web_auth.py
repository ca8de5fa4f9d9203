"""Who may read a web endpoint (the dashboard, the worker's account pages): anyone on this machine
by default, a token holder once exposed.

The pages show every account's balances, so the rule is simple and checked at start:

- bound to a loopback address (the default, 127.0.0.1), no token is needed;
- bound to anything else, ``BILLING_DASHBOARD_TOKEN`` must be set (16 characters or more), or the
  command refuses to start. A token set on loopback is enforced as well.

With a token, a request needs ``Authorization: Bearer <token>``, or the ``token`` cookie that a
browser gets by opening any page once with ``?token=<token>`` (it is then redirected to the same
page without the token, so the token does not stay in the address bar, the history or a
Referer). The cookie holds an HMAC of the token rather than the token itself. Comparisons are
constant-time (``hmac.compare_digest``), and the token is never logged: the access log records the
path without its query string.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from runtime.settings import SettingsError

TOKEN_VARIABLE = "BILLING_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16
COOKIE_NAME = "token"
QUERY_PARAMETER = "token"
_COOKIE_CONTEXT = b"billing-dashboard-cookie"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); a name is not trusted."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(host: str, env: Mapping[str, str], variable: str = TOKEN_VARIABLE,
               what: str = "the dashboard") -> str | None:
    """The token to require, or None on loopback without one; fails fast on a missing or short
    token, naming the variable (``variable``: the dashboard's, or the worker's web server's)."""
    token = env.get(variable) or None
    if token is None:
        if is_loopback(host):
            return None
        raise SettingsError(
            f"{what} would listen on {host}, which is not a loopback address: set "
            f"{variable} (at least {MIN_TOKEN_LENGTH} characters, e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`) or use "
            "--host 127.0.0.1")
    if len(token) < MIN_TOKEN_LENGTH:
        raise SettingsError(f"{variable} is {len(token)} characters long; use at least "
                            f"{MIN_TOKEN_LENGTH}")
    return token


class TokenCheck:
    """Checks a request's credentials against one token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.cookie_value = hmac.new(self._token, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()

    def is_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), self._token)

    def allows(self, authorization: str | None, cookie: str | None) -> bool:
        """True for ``Bearer <token>`` or the cookie set after ``?token=``."""
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and self.is_token(credentials.strip()):
                return True
        return cookie is not None and hmac.compare_digest(cookie.encode(),
                                                          self.cookie_value.encode())
