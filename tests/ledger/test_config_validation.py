"""Configuration and price book files: a bad file fails at start with a ConfigError that says
what is wrong (and where). Files are written to pytest's tmp_path only."""

from decimal import Decimal

import pytest

from billing.config import BillingConfig, ConfigError, config_from_mapping
from billing.pricebook import pricebook_from_mapping
from runtime.rules_files import load_config, load_pricebook

TIER0 = {"name": "0", "rpm_limit": 10, "tpm_limit": 60000}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- price book -------------------------------------------------------------------------------


def test_default_price_book_loads():
    book = load_pricebook()
    assert book.products["llama-v3p1-8b"]["input_tokens"] == Decimal("0.20")
    assert book.products["h100-deployment"]["gpu_seconds"] == Decimal("805.56")


def test_price_book_from_yaml(tmp_path):
    path = write(tmp_path, "prices.yaml",
                 'currency: USD\nproducts:\n  m:\n    input_tokens: "0.5"\n')
    assert load_pricebook(path).rate("m", {"input_tokens": 2_000_000}) == Decimal("1.000000")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.json", '{"products": {"m": {"input_tokens": 0.2}}}', "m.input_tokens: price must be a "
                                                             "decimal string"),
    ("p.yaml", "products:\n  m:\n    input_tokens: 0.20\n", "m.input_tokens: price must be a "
                                                            "decimal string"),
    ("p.json", '{"products": {"m": {"input_tokens": "-0.2"}}}', "must be zero or more"),
    ("p.json", '{"products": {"m": {"input_tokens": "abc"}}}', "is not a decimal number"),
    ("p.json", '{"products": {"m": {"input_tokens": "NaN"}}}', "input_tokens"),
    ("p.json", '{"products": {"m": {"input_tokens": true}}}', "decimal string"),
    ("p.json", '{"currency": "EUR", "products": {"m": {"x": "1"}}}', "currency must be USD"),
    ("p.json", '{"products": {}}', "'products' must be a non-empty mapping"),
    ("p.json", '{"products": {"m": {}}}', "product 'm' needs a mapping"),
    ("p.json", '{"products": {"m": {"x": "1"}', "not valid JSON"),
    ("p.yaml", "products: [unclosed\n", "not valid YAML"),
    ("p.yaml", "- just\n- a list\n", "expected a mapping at the top level"),
])
def test_bad_price_book_file(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_pricebook(path)
    assert str(path) in str(error.value)  # names the file


def test_missing_price_book_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_pricebook(tmp_path / "absent.json")


def test_price_book_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="unknown"):
        pricebook_from_mapping({"curency": "EUR", "products": {"m": {"x": "1"}}})


# -- billing configuration ---------------------------------------------------------------------


def test_no_file_means_the_defaults():
    assert load_config() == BillingConfig()


def test_config_file_overrides_defaults(tmp_path):
    path = write(tmp_path, "c.yaml", 'free_credit: "2.5"\nclose_grace_seconds: 0\n'
                                     'prepaid_cutover: "2026-01-01T00:00:00Z"\n')
    config = load_config(path)
    assert config.free_credit == Decimal("2.500000")
    assert config.close_grace.total_seconds() == 0
    assert config.prepaid_cutover.year == 2026


@pytest.mark.parametrize(("data", "message"), [
    ({"free_credits": "1"}, r"unknown keys \['free_credits'\]"),
    ({"free_credit": 1.0}, "free_credit must be a decimal string"),
    ({"free_credit": "-1"}, "must not be negative"),
    ({"close_grace_seconds": -5}, "close_grace_seconds must be a whole number of seconds"),
    ({"close_grace_seconds": 1.5}, "close_grace_seconds"),
    ({"dedup_horizon_seconds": 0}, "dedup_horizon_seconds must be positive"),
    ({"max_lateness_seconds": 40 * 86400}, "max_lateness_seconds must be positive and at most"),
    ({"future_tolerance_seconds": -1}, "future_tolerance_seconds must be a whole number"),
    ({"prepaid_cutover": "2025-06-01T00:00:00"}, "no time zone"),
    ({"prepaid_cutover": "June 1st"}, "not an ISO-8601 time"),
    ({"no_payment_method_rpm": 0}, "no_payment_method_rpm must be a positive whole number"),
    ({"tiers": {"0": {}}}, "tiers must be a list"),
    ({"tiers": [TIER0]}, "need at least tier 0"),
    ({"tiers": [TIER0, {**TIER0, "name": "1", "qualifying_amount": "10"},
                {**TIER0, "name": "2", "qualifying_amount": "5"}]},
     "qualifying_amount must increase"),
    ({"tiers": [TIER0, {**TIER0, "name": "0"}]}, "names must be unique"),
    ({"tiers": [TIER0, {**TIER0, "name": "1", "rpm": 5}]}, r"tiers\[1\]: unknown keys \['rpm'\]"),
    ({"tiers": [TIER0, {**TIER0, "name": "1", "budget_max": 50.0}]},
     r"tiers\[1\].budget_max must be a decimal string"),
    ({"tiers": [TIER0, {"name": "1", "rpm_limit": 10}]}, r"tiers\[1\].tpm_limit"),
    ({"tiers": [{"rpm_limit": 1, "tpm_limit": 1}, TIER0]}, r"tiers\[0\].name is required"),
    ({"enterprise": {"rpm_limit": 6000, "tpm_limit": 1, "colour": "red"}},
     r"enterprise: unknown keys \['colour'\]"),
])
def test_bad_config(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(data, "billing.yaml")


def test_bad_config_file_names_the_file(tmp_path):
    path = write(tmp_path, "billing.yaml", "free_credit: '1'\nwhatever: 3\n")
    with pytest.raises(ConfigError, match="unknown keys") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_bad_yaml_config(tmp_path):
    path = write(tmp_path, "billing.yaml", "tiers: [\n  {name: 0\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_equal_tier_thresholds_are_refused():
    with pytest.raises(ConfigError):
        config_from_mapping({"tiers": [TIER0, {**TIER0, "name": "1"},
                                       {**TIER0, "name": "2", "qualifying_amount": "50"},
                                       {**TIER0, "name": "3", "qualifying_amount": "50"}]})


def test_enterprise_not_a_mapping_is_a_config_error():
    with pytest.raises(ConfigError, match="enterprise"):
        config_from_mapping({"enterprise": 5})
