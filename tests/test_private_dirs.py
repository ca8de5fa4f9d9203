"""Data directories are private to their owner (``runtime.settings.private_dir``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.settings import make_private, private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o002)  # the widest common umask: group-writable
    try:
        yield
    finally:
        os.umask(old)


def test_missing_directories_are_created_0700(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "data" / "faust" / "billing-ledger"
    assert private_dir(target) == target
    for path in (tmp_path / "data", tmp_path / "data" / "faust", target):
        assert mode(path) == 0o700, path
    assert mode(tmp_path) == 0o755  # what existed is left alone


def test_private_dir_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)
    private_dir(shared)
    assert mode(shared) == 0o750


def test_make_private_restricts_an_existing_directory(tmp_path: Path) -> None:
    old = tmp_path / "kafka"
    old.mkdir()
    os.chmod(old, 0o755)
    make_private(old)
    assert mode(old) == 0o700
