"""A server run as a detached background process: pid file, log file, start-and-wait, stop.

Kafka and ClickHouse are started the same way, so the rules live here once:

- the process gets its own session (``start_new_session``), so it outlives ``billing stack up`` and
  a stop can signal its whole process group;
- the pid file alone is never trusted: a pid counts as ours only while the process is alive and its
  command line names our config file (pids are reused, pid files outlive crashes);
- a start is done only when the server *answers* a real request, not when its port opens;
- a stop is SIGTERM (clean shutdown: Kafka flushes logs and writes its clean-shutdown marker), then
  SIGKILL after a grace period, and waits until the process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from runtime.logfmt import log_event
from runtime.settings import Settings, make_private
from runtime.topics import StackError

log = logging.getLogger("devkit.stack")

LOG_TAIL_LINES = 20


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited child nobody has waited for)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the ")" that closes the command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` ([] when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on ``host:port`` (a bind fails), ignoring TIME_WAIT leftovers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def port_owner(port: int) -> str:
    """Who listens on ``port``, as ``ss`` reports it, for error messages ("" when unknown)."""
    if shutil.which("ss") is None:
        return ""
    result = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    )
    return " ".join(result.stdout.split())


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise steps across processes (two ``billing stack up``, or one and a test session)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class BackgroundServer(ABC):
    """One server process under ``home`` (a directory of ``settings.data_dir``)."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def home(self) -> Path:
        """Everything this server writes: generated config, data, logs, pid file. Private to
        its owner (0700), created so by :meth:`start`."""
        return self.settings.data_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / f"{self.name}.pid"

    @property
    def stdout_log(self) -> Path:
        """The process's stdout and stderr: where a crash before logging starts shows up."""
        return self.home / "stdout.log"

    @property
    @abstractmethod
    def config_file(self) -> Path:
        """The generated config the process is started with; its path marks the process as ours."""

    @property
    @abstractmethod
    def server_log(self) -> Path:
        """The server's own log file."""

    @property
    @abstractmethod
    def ports(self) -> dict[str, int]:
        """Name -> loopback port that this server listens on."""

    @abstractmethod
    def prepare(self) -> list[str]:
        """Install what is missing, write the config, initialise storage; return the command."""

    @abstractmethod
    def answers(self, timeout: float = 2.0) -> bool:
        """True when the server answers a real request within ``timeout`` seconds."""

    @property
    def pid(self) -> int | None:
        """The pid of our running server, or None (a stale or foreign pid file counts as None)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if pid_alive(pid) and any(str(self.config_file) in arg for arg in cmdline(pid)):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 120.0) -> bool:
        """Start the server and wait until it answers; False when it was already running."""
        make_private(self.home)
        with file_lock(self.home / f".{self.name}.lock"):
            return self._start(timeout)

    def _start(self, timeout: float) -> bool:
        pid = self.pid
        if pid is not None:
            log_event(log, f"{self.name}.already_running", pid=pid, **self.ports)
            return False
        self.check_ports_free()
        command = self.prepare()
        started = time.monotonic()
        with self.stdout_log.open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        log_event(log, f"{self.name}.starting", pid=process.pid, **self.ports)
        deadline = started + timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited with code {code} while starting.\n{self.report()}"
                )
            if self.answers():
                log_event(
                    log,
                    f"{self.name}.started",
                    pid=process.pid,
                    seconds=f"{time.monotonic() - started:.1f}",
                    **self.ports,
                )
                return True
            time.sleep(0.25)
        self._stop(30.0)
        raise StackError(f"{self.name} did not answer within {timeout:.0f}s.\n{self.report()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; False when nothing of ours was running."""
        if not self.pid_file.exists():
            return False
        with file_lock(self.home / f".{self.name}.lock"):
            return self._stop(timeout)

    def _stop(self, timeout: float) -> bool:
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        started = time.monotonic()
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            log_event(log, f"{self.name}.kill", level=logging.WARNING, pid=pid, after_s=timeout)
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10.0):
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL; check `ps -p {pid}`")
        self.pid_file.unlink(missing_ok=True)
        log_event(log, f"{self.name}.stopped", pid=pid, seconds=f"{time.monotonic() - started:.1f}")
        return True

    def report(self) -> str:
        """The last lines of the server's logs, for an error message."""
        parts = []
        for path in (self.server_log, self.stdout_log):
            text = tail(path)
            if text.strip():
                parts.append(f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{text}")
        return "\n".join(parts) or f"(no log output in {self.home})"

    def check_ports_free(self) -> None:
        """Raise StackError naming the owner when another process holds one of our ports."""
        for label, port in self.ports.items():
            if port_in_use(port):
                owner = port_owner(port)
                raise StackError(
                    f"{self.name}: 127.0.0.1:{port} ({label}) is already taken by another "
                    f"process{': ' + owner if owner else ''}. Stop it, or choose other ports with "
                    "BILLING_KAFKA_PORT / BILLING_KAFKA_CONTROLLER_PORT / "
                    "BILLING_CLICKHOUSE_PORT / BILLING_CLICKHOUSE_HTTP_PORT."
                )

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        """Signal the process group (the server and anything it forked), else the process."""
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        # When this process started the server (tests do), reap it rather than leave a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True
