"""The billing configuration and the price book, read from their files (JSON or YAML).

The rules (``billing.config``, ``billing.pricebook``) validate mappings and do no I/O; reading the
files, or the shipped default price book, happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

import click

from billing.config import BillingConfig, config_from_mapping
from billing.pricebook import PriceBook, pricebook_from_mapping
from runtime.config_files import read_mapping
from runtime.settings import Settings

Command = TypeVar("Command", bound=Callable[..., object])


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


def load_rules(settings: Settings, config_path: str | Path | None = None,
               pricebook_path: str | Path | None = None) -> tuple[BillingConfig, PriceBook]:
    """The configuration and price book a command applies or checks: the files it was given, else
    the settings' (``BILLING_CONFIG``, ``BILLING_PRICEBOOK``), else the defaults."""
    return (load_config(config_path or settings.config_path),
            load_pricebook(pricebook_path or settings.pricebook_path))


def rules_options(command: Command) -> Command:
    """``--pricebook`` and ``--config``, for :func:`load_rules`: the same options, with the same
    defaults, on every command that applies the rules or checks input against them (the worker,
    ``billing produce``), so a producer refuses exactly what the worker would dead-letter."""
    command = click.option(
        "--config", "config_path", default=None,
        help="Billing configuration file (JSON or YAML): acceptance window, id sizes, net terms. "
             "Default: BILLING_CONFIG, else the rules' defaults.")(command)
    return click.option(
        "--pricebook", "pricebook_path", default=None,
        help="Price book file (JSON or YAML): products, meters and prices; usage of a product or "
             "meter it lacks is dead-lettered by the worker, refused by billing produce. "
             "Default: BILLING_PRICEBOOK, else the shipped one.")(command)
