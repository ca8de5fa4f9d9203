"""The worker's account pages on the real broker: every account's state as replay computes it,
from either of two workers (a request for an account the other owns is routed to it), and the
may-send answer a gateway acts on."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing.events import normalize_input, to_jsonable
from devkit.harness import WorkerProcess
from devkit.workload import generate
from runtime.observe import wait_until
from runtime.settings import Settings
from tests.integration.pipeline import in_merge_order, isolated, publish, replay_of

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answers(port: int) -> bool:
    try:
        return get(port, "/accounts/nobody")[0] == 404
    except OSError:
        return False


def test_two_workers_answer_for_every_account(stack: Settings, tmp_path: Path) -> None:
    settings, app_id = isolated(stack, "pages")
    events = in_merge_order([normalize_input(event) for event in generate(
        accounts=60, events=3_000, seed=31, start=datetime(2026, 1, 1, tzinfo=UTC))])
    publish(settings, events)
    snapshots, _ = replay_of(events)
    ports = (free_port(), free_port())
    workers = [WorkerProcess(settings, app_id, tmp_path / f"worker-{n}.log",
                             env={"BILLING_WORKER_WEB_PORT": str(port)})
               for n, port in enumerate(ports)]
    try:
        for worker in workers:
            worker.start()
        workers[0].wait_drained(timeout=600)
        wait_until(lambda: all(answers(port) for port in ports), 120, 1.0,
                   "both workers' web servers")
        for port in ports:  # each worker owns about half the accounts: the rest are routed
            for account_id, expected in snapshots.items():
                status, body = get(port, f"/accounts/{account_id}")
                assert status == 200, (port, account_id, body)
                assert {key: body[key] for key in expected} == to_jsonable(expected)
                assert body["may_send"] == (expected["status"] == "active")
        blocked = next(account for account, snap in snapshots.items()
                       if snap["status"] != "active")
        status, decision = get(ports[0], f"/accounts/{blocked}/may-send")
        assert status == 200 and decision["allowed"] is False
        assert decision["reason"] != "active"
        assert get(ports[1], "/accounts/never-opened/may-send")[0] == 404
    finally:
        for worker in workers:
            worker.stop()
