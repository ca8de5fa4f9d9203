"""``billing worker`` with every log line kept, for the tests that read what Faust logs at each
rebalance ("Worker ready", its recovery tables): the worker's repeat filter (``runtime.logs``)
lets one line of a kind through per 30 s, and two rebalances often come closer than that."""

from __future__ import annotations

import streams.cli
from commands.cli import main

streams.cli.install_repeat_filter = lambda *_, **__: None

if __name__ == "__main__":
    main()
