"""The billing configuration and the price book, read from their files (JSON or YAML).

The rules (``billing.config``, ``billing.pricebook``) validate mappings and do no I/O; reading the
files, or the shipped default price book, happens here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from billing.config import BillingConfig, config_from_mapping
from billing.pricebook import PriceBook, pricebook_from_mapping
from runtime.config_files import read_mapping


def load_config(path: str | Path | None = None) -> BillingConfig:
    """The defaults, or the file at ``path`` (JSON or YAML) layered over them."""
    if path is None:
        return BillingConfig()
    return config_from_mapping(read_mapping(path), str(path))


def load_pricebook(path: str | Path | None = None) -> PriceBook:
    """The shipped default price book, or the one at ``path`` (JSON or YAML)."""
    if path is None:
        default = resources.files("billing").joinpath("pricebook.default.json")
        with resources.as_file(default) as default_path:
            return pricebook_from_mapping(read_mapping(default_path), "default price book")
    return pricebook_from_mapping(read_mapping(path), str(path))
