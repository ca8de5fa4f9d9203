"""The worker's reliance on Faust's internals is checked against the installed faust-streaming:
an upgrade that changes them fails here, loudly, before it fails in production."""

import re
import subprocess
import tomllib

from runtime.settings import REPO_ROOT
from streams.quirks.faust_internals import PINNED_VERSION, missing_internals


def test_the_pinned_faust_still_has_every_internal_the_worker_uses():
    assert missing_internals() == []


def test_the_pin_in_pyproject_is_the_version_the_internals_were_read_from():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert f"faust-streaming=={PINNED_VERSION}" in project["project"]["dependencies"]


def test_no_other_module_touches_faust_internals():
    """Private attributes of Faust's objects are used in streams/quirks/faust_internals.py only."""
    found = subprocess.run(
        ["grep", "-rnE", r"consumer\._|\b_current_event\b|app\._|stream\._", "--include=*.py",
         "streams", "runtime", "sinks", "commands", "devkit"],
        cwd=REPO_ROOT, capture_output=True, text=True).stdout.splitlines()
    outside = [line for line in found if not line.startswith("streams/quirks/faust_internals.py")
               and not re.search(r"self\._", line)]
    assert outside == []
