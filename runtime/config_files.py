"""Reading JSON or YAML configuration files with errors that name the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from billing.config import ConfigError


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a JSON (``.json``) or YAML (anything else) file that must hold a mapping.

    YAML floats would lose exactness, so numbers that look like floats are refused by the callers;
    amounts must be written as strings.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data
