"""The inline ``wait_first`` answers as mode's own does, whether its first awaitable finishes at
once, waits, fails or is cancelled (``streams/quirks/inline_delivery.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode import Service

from streams.quirks.inline_delivery import InlineWaitFirst, missing_internals


def test_the_installed_faust_and_mode_still_have_what_it_relies_on() -> None:
    assert missing_internals() == []


async def _value(value: Any) -> Any:
    return value


async def _after(future: asyncio.Future) -> Any:
    return await future


async def _fail() -> None:
    raise ValueError("callback failed")


def _both(scenario: Any) -> tuple[Any, Any]:
    """``scenario(wait_first, service)`` under mode's own ``wait_first`` and the inline one,
    each on a fresh service and event loop."""
    async def run(inline: bool) -> Any:
        service = Service()
        wait_first = InlineWaitFirst(service, service.wait_first) if inline \
            else service.wait_first
        return await scenario(wait_first, service)

    return asyncio.run(run(False)), asyncio.run(run(True))


def test_a_first_step_that_finishes_answers_at_once_and_closes_the_rest() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        suspended = asyncio.Event()
        first = _value("delivered")
        results = await wait_first(first, suspended.wait())
        assert results.done == [first]
        await asyncio.sleep(0)  # mode's cancelled waiter leaves at its next step
        return results.results, results.stopped, len(suspended._waiters)

    mode, inline = _both(scenario)
    assert inline == mode == (["delivered"], False, 0)


def test_other_awaitables_that_finish_at_once_are_winners_too() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        suspended = asyncio.Event()
        suspended.set()
        results = await wait_first(_value("delivered"), suspended)  # an Event: its .wait()
        return results.results, results.stopped

    mode, inline = _both(scenario)
    assert inline == mode == (["delivered", True], False)


def test_a_first_step_that_waits_goes_on_in_mode_and_names_the_callers_awaitable() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.set_result, "later")
        first = _after(future)
        results = await wait_first(first, asyncio.Event().wait())
        assert results.done == [first]
        return results.results, results.stopped

    mode, inline = _both(scenario)
    assert inline == mode == (["later"], False)


def test_a_suspension_while_waiting_wins_and_cancels_the_first() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        loop = asyncio.get_running_loop()
        never = loop.create_future()
        suspended = asyncio.Event()
        loop.call_later(0.01, suspended.set)
        results = await wait_first(_after(never), suspended.wait())
        await asyncio.sleep(0)  # let the cancellation reach the future
        return results.results, results.stopped, never.cancelled()

    mode, inline = _both(scenario)
    assert inline == mode == ([True], False, True)


def test_a_stopped_service_answers_stopped() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        service._stopped.set()
        results = await wait_first(_value("delivered"), asyncio.Event().wait())
        return results.done, results.results, results.stopped

    mode, inline = _both(scenario)
    assert inline == mode == ([], [], True)


def test_an_error_of_the_first_step_propagates_and_nothing_is_left_waiting() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        suspended = asyncio.Event()
        with pytest.raises(ValueError, match="callback failed"):
            await wait_first(_fail(), suspended.wait())
        await asyncio.sleep(0)  # mode's cancelled waiter leaves at its next step
        return len(suspended._waiters)

    mode, inline = _both(scenario)
    assert inline == mode == 0


def test_cancelling_the_caller_cancels_a_waiting_first_awaitable() -> None:
    async def scenario(wait_first: Any, service: Service) -> Any:
        loop = asyncio.get_running_loop()
        never = loop.create_future()
        caller = asyncio.ensure_future(wait_first(_after(never), asyncio.Event().wait()))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0)
        return never.cancelled()

    mode, inline = _both(scenario)
    assert inline == mode is True


def test_the_wait_of_an_event_not_set_is_closed_without_its_first_step() -> None:
    """Its first step would only put a future on the event's waiters and wait on it."""
    class _Waiters(list):
        def append(self, item: Any) -> None:
            raise AssertionError("the wait was started")

    async def scenario() -> Any:
        service, suspended = Service(), asyncio.Event()
        suspended._waiters = _Waiters()  # type: ignore[assignment]
        waiting = suspended.wait()
        results = await InlineWaitFirst(service, service.wait_first)(_value("delivered"),
                                                                     waiting)
        return results.results, results.stopped, waiting.cr_frame

    assert asyncio.run(scenario()) == (["delivered"], False, None)
