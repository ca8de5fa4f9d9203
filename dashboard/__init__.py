"""The read-only web dashboard over ClickHouse (see dashboard/README.md).

- ``queries/``, ``data``  read-only SQL and the figures it gives: totals, accounts, one account
- ``pages``               server-side HTML with inline SVG charts (no scripts, nothing external)
- ``auth``                loopback by default; a token (bearer or cookie) when exposed
- ``app``                 the aiohttp application: pages, JSON, /healthz
- ``cli``                 ``billing dashboard``
"""
