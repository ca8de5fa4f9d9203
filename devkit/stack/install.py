"""Getting the stack's software onto a fresh machine: JDK check, Kafka jars via Maven, apt.

Machines are handed out fresh, so nothing installed by hand can be relied on: ``billing stack up``
installs what is missing each time, and skips what is already there (a stamp file records which
pom the jars were resolved from, so an unchanged pom costs no network at all).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from devkit.stack.process import file_lock
from runtime.logfmt import log_event
from runtime.settings import REPO_ROOT, Settings
from runtime.topics import StackError

log = logging.getLogger("devkit.stack")

STACK_DIR = REPO_ROOT / "stack"
KAFKA_POM = STACK_DIR / "kafka" / "pom.xml"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+
JAVA_CANDIDATES = (Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"),)
CLICKHOUSE_BINARIES = (Path("/usr/bin/clickhouse-server"), Path("/usr/sbin/clickhouse-server"))
# Maven's messages when it cannot reach the repository (as opposed to a bad pom).
UNREACHABLE = re.compile(
    r"Could not transfer|UnknownHost|Connection refused|Network is unreachable|timed out"
    r"|Connect to .* failed|No route to host",
    re.IGNORECASE,
)


def cache_dir(settings: Settings) -> Path:
    """Where downloads go: ``BILLING_CACHE_DIR`` or else the data dir."""
    return settings.cache_dir or settings.data_dir


def java_major(java: Path) -> int:
    """The major version of a ``java`` binary (0 when it does not run)."""
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return 0
    match = re.search(r'version "(\d+)', result.stderr)
    return int(match.group(1)) if match else 0


def find_java() -> Path:
    """The ``java`` to run Kafka with: $JAVA_HOME, then Debian's JDK 17, then ``java`` on PATH."""
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    candidates.extend(JAVA_CANDIDATES)
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    seen = []
    for java in candidates:
        if java.exists():
            major = java_major(java)
            if major >= MIN_JAVA:
                return java
            seen.append(f"{java} (version {major or 'unknown'})")
    raise StackError(
        f"No Java {MIN_JAVA}+ found for the Kafka broker"
        + (f"; found only {', '.join(seen)}" if seen else "")
        + ". Install one (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME."
    )


def run_with_progress(
    command: list[str], desc: str, unit_pattern: str, env: Mapping[str, str] | None = None
) -> None:
    """Run ``command``, counting output lines that match ``unit_pattern`` on a progress bar.

    A long download shows it is moving; on a non-zero exit it raises ``CalledProcessError`` whose
    ``output`` is the last lines, so the caller can tell "unreachable" from "broken".
    """
    pattern = re.compile(unit_pattern)
    last: deque[str] = deque(maxlen=40)
    with (
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as process,
        tqdm(desc=desc, unit=" files", disable=None, leave=False) as bar,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            last.append(line.rstrip())
            if pattern.search(line):
                bar.update(1)
        code = process.wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, command, "\n".join(last))


def apt_install(*packages: str) -> None:
    """``apt-get install`` as root; on failure (stale or empty package lists) update and retry."""
    if os.geteuid() != 0:
        raise StackError(
            f"{', '.join(packages)} missing and not running as root: "
            f"run `sudo apt-get install -y {' '.join(packages)}` and retry."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    started = time.monotonic()
    log_event(log, "apt.install", packages=",".join(packages))
    try:
        run_with_progress(install, "apt-get install", r"^(Get:|Unpacking|Setting up)", env=env)
    except subprocess.CalledProcessError:
        log_event(log, "apt.update")
        try:
            run_with_progress(["apt-get", "update"], "apt-get update", r"^(Get:|Hit:)", env=env)
            run_with_progress(install, "apt-get install", r"^(Get:|Unpacking|Setting up)", env=env)
        except subprocess.CalledProcessError as error:
            raise StackError(
                f"apt-get could not install {', '.join(packages)} (exit {error.returncode}):\n"
                f"{error.output}"
            ) from None
    log_event(
        log,
        "apt.installed",
        packages=",".join(packages),
        seconds=f"{time.monotonic() - started:.1f}",
    )


def find_mvn() -> Path:
    """``mvn``, installed from Debian's packages when missing."""
    mvn = shutil.which("mvn")
    if mvn is None:
        apt_install("maven")
        mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn still not on PATH after installing Debian's maven package")
    return Path(mvn)


def _maven_error(output: str, cache: Path) -> StackError:
    """A short message: the transfer failures, or else Maven's [ERROR] lines."""
    lines = output.splitlines()
    unreachable = [line for line in lines if UNREACHABLE.search(line)]
    if unreachable:
        return StackError(
            "Maven could not reach Maven Central to download the Kafka jars (the first start "
            f"needs the network; later starts use the cache in {cache}):\n"
            + "\n".join(unreachable[-3:])
        )
    errors = [line for line in lines if line.startswith("[ERROR]")] or lines
    return StackError(f"Maven failed resolving {KAFKA_POM}:\n" + "\n".join(errors[:20]))


def ensure_kafka_libs(settings: Settings) -> Path:
    """Resolve the broker jars from Maven Central into the cache once; return their directory."""
    libs = cache_dir(settings) / "kafka-libs"
    stamp = libs / ".pom-sha256"
    wanted = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    with file_lock(cache_dir(settings) / ".kafka-libs.lock"):
        if stamp.exists() and stamp.read_text().strip() == wanted:
            return libs
        staging = libs.with_name("kafka-libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            str(find_mvn()),
            "-B",
            "-U",  # retry downloads that failed before: Maven caches failures for a day
            "-f",
            str(KAFKA_POM),
            f"-Dmaven.repo.local={cache_dir(settings) / 'm2'}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ]
        started = time.monotonic()
        log_event(log, "maven.resolve", pom=KAFKA_POM, repo=cache_dir(settings) / "m2")
        try:
            run_with_progress(command, "maven: kafka jars", r"\] Downloaded from ")
        except subprocess.CalledProcessError as error:
            raise _maven_error(error.output or "", cache_dir(settings)) from None
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        stamp.write_text(wanted + "\n")
        log_event(
            log,
            "maven.resolved",
            jars=sum(1 for _ in libs.glob("*.jar")),
            seconds=f"{time.monotonic() - started:.1f}",
        )
    return libs


def _clickhouse_binary() -> Path | None:
    found = shutil.which("clickhouse-server")
    if found:
        return Path(found)
    return next((binary for binary in CLICKHOUSE_BINARIES if binary.exists()), None)


def ensure_clickhouse_binary() -> Path:
    """Debian's ``clickhouse-server`` (18.16), installed with apt when missing."""
    binary = _clickhouse_binary()
    if binary is None:
        apt_install("clickhouse-server", "clickhouse-client")
        binary = _clickhouse_binary()
    if binary is None:
        raise StackError("clickhouse-server not found even after apt-get install clickhouse-server")
    return binary
