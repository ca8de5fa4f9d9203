"""The month-close policy by event time (billing.watermark), as replay and the worker share it."""

from billing.ledger import Ledger
from billing.watermark import Watermark
from tests.ledger.builders import DEFAULT_CONFIG, TEST_PRICEBOOK, at

LEDGER = Ledger(DEFAULT_CONFIG, TEST_PRICEBOOK)


def test_a_month_closes_when_the_watermark_reaches_its_close_time_and_only_then():
    clock = Watermark()
    assert clock.advance(LEDGER, at("2025-07-10T00:00:00Z")) == "2025-06"  # first usage
    assert clock.advance(LEDGER, at("2025-08-01T00:59:59.999Z")) is None  # grace: 1 hour
    assert clock.advance(LEDGER, at("2025-08-01T01:00:00Z")) == "2025-07"
    assert clock.advance(LEDGER, at("2025-08-20T00:00:00Z")) is None


def test_an_earlier_usage_never_moves_it_back_nor_closes_anything():
    clock = Watermark()
    clock.advance(LEDGER, at("2025-08-05T00:00:00Z"))
    assert clock.advance(LEDGER, at("2025-07-01T00:00:00Z")) is None
    assert clock.to_record()["watermark_ms"] == 1754352000000


def test_a_jump_closes_every_month_passed_at_once():
    clock = Watermark()
    clock.advance(LEDGER, at("2025-07-10T00:00:00Z"))
    assert clock.advance(LEDGER, at("2025-11-03T00:00:00Z")) == "2025-10"


def test_the_stored_record_round_trips_and_keeps_closing_where_it_left_off():
    clock = Watermark()
    clock.advance(LEDGER, at("2025-07-10T00:00:00Z"))
    again = Watermark.from_record(clock.to_record())
    assert again.advance(LEDGER, at("2025-07-20T00:00:00Z")) is None
    assert again.advance(LEDGER, at("2025-08-01T01:00:00Z")) == "2025-07"


def test_a_loaded_watermark_works_out_the_months_to_close_once_until_the_next_close_time():
    """The worker loads it from its record at every batch: the usage after the first must not
    each work the closable month out again (they did: ~2 % of the worker's time)."""
    asked = []

    class CountingLedger(Ledger):
        def closable_through(self, watermark):
            asked.append(watermark)
            return super().closable_through(watermark)

    ledger = CountingLedger(DEFAULT_CONFIG, TEST_PRICEBOOK)
    clock = Watermark.from_record({"watermark_ms": 0, "closed_through": "2025-06"})
    for day in range(10, 20):
        assert clock.advance(ledger, at(f"2025-07-{day}T00:00:00Z")) is None
    assert len(asked) == 1
    assert clock.advance(ledger, at("2025-08-01T01:00:00Z")) == "2025-07"
    assert len(asked) == 2
