"""Hand each fetched message to its stream without four asyncio tasks per message.

Faust's fetcher (``Consumer._drain_messages``) delivers every message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's ``wait_first``
wraps each argument, and the service's stopped and crashed events, in a task and waits for the
first to finish. That costs ~32 µs per message here, a third of a bare Faust agent's whole cost
per event, though the callback (putting the message on its stream's queue) almost always
finishes at its first step, without waiting for anything.

:func:`deliver_inline` gives the consumer a ``wait_first`` that first runs the first awaitable's
first step in the calling task. When that step finishes it, the other awaitables get their first
step too (an ``Event.wait()`` of a set event finishes there; one of an event not set, Faust's
``suspend_flow`` on almost every message, would only wait: it is closed without its first step,
which cost ~1 µs in isolation and ~5 µs per message in a profile of the worker), the unfinished
ones are closed, and
the answer is what mode's own would answer after the tasks' first steps: the finished ones, or
"stopped" when the service is stopping or crashed. When the first step waits (a full stream
buffer), the rest of the coroutine, driven on from where it stopped, goes to mode's own
``wait_first`` with the other awaitables, so waiting, suspension and cancellation behave as
before. Nothing else changes: which messages reach the stream, in which order, and what Faust
does with its read offsets.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from faust.transport.consumer import Consumer
from mode.services import WaitResults

WaitFirst = Callable[..., Awaitable[WaitResults]]

_EVENT_WAIT = asyncio.Event.wait.__code__


def deliver_inline(consumer: Any) -> None:
    """Give ``consumer`` (a started Faust consumer) the inline ``wait_first`` (module docstring).
    Faust's fetcher looks the method up on each message, so this applies from the next one."""
    consumer.wait_first = InlineWaitFirst(consumer, consumer.wait_first)


class InlineWaitFirst:
    """``Service.wait_first`` that finishes what finishes at once in the calling task."""

    def __init__(self, service: Any, wait_first: WaitFirst) -> None:
        self.service = service
        self.wait_first = wait_first  # mode's own, for everything that has to wait

    async def __call__(self, *waitables: Any, timeout: Any = None) -> WaitResults:
        awaitables = [w if isinstance(w, Awaitable) else w.wait() for w in waitables]
        if not all(inspect.iscoroutine(a) for a in awaitables):
            return await self.wait_first(*awaitables, timeout=timeout)
        first = awaitables[0]
        try:
            waiting_on = first.send(None)
        except StopIteration as finished:
            return self._finished_at_once(waitables, awaitables, finished.value)
        except BaseException:
            _close(awaitables[1:])
            raise
        resumed = _resumed(first, waiting_on)
        results = await self.wait_first(resumed, *awaitables[1:], timeout=timeout)
        # mode names the winners by what it was given: name the first by what the caller gave.
        done = [waitables[0] if winner is resumed else winner for winner in results.done]
        return WaitResults(done, results.results, results.stopped)

    def _finished_at_once(self, waitables: tuple[Any, ...], awaitables: list[Coroutine],
                          first_result: Any) -> WaitResults:
        winners, results = [waitables[0]], [first_result]
        others = zip(waitables[1:], awaitables[1:], strict=True)
        for number, (waitable, other) in enumerate(others, 2):
            if _waits_on_unset_event(other):
                other.close()  # its first step would only wait
                continue
            try:
                other.send(None)
            except StopIteration as finished:
                winners.append(waitable)
                results.append(finished.value)
            except BaseException:
                _close(awaitables[number:])
                raise
            else:
                other.close()
        if self.service.should_stop:  # stopping or crashed
            return WaitResults([], [], True)
        return WaitResults(winners, results, False)


def _waits_on_unset_event(coroutine: Coroutine) -> bool:
    """Whether ``coroutine`` is an ``asyncio.Event.wait()`` not started, of an event not set."""
    frame = getattr(coroutine, "cr_frame", None)
    return (getattr(coroutine, "cr_code", None) is _EVENT_WAIT and frame is not None
            and not frame.f_locals["self"].is_set())


def _close(coroutines: list[Coroutine]) -> None:
    for coroutine in coroutines:
        coroutine.close()


async def _resumed(coroutine: Coroutine, waiting_on: Any) -> Any:
    """:func:`_resume` as a native coroutine: what mode's ``wait_first`` takes for awaitable."""
    return await _resume(coroutine, waiting_on)


@types.coroutine
def _resume(coroutine: Coroutine, waiting_on: Any) -> Generator[Any, Any, Any]:
    """Drive ``coroutine`` on from the step that yielded ``waiting_on`` (what a task awaits:
    a future, or ``None`` for a bare yield), passing in what its task sends or throws."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:  # cancellation included: the coroutine decides
            try:
                waiting_on = coroutine.throw(error)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as finished:
                return finished.value


def missing_internals() -> list[str]:
    """What this relies on in the installed Faust and mode (empty when all is there)."""
    missing = []
    if "await self.wait_first(" not in inspect.getsource(Consumer._drain_messages):
        missing.append("Consumer._drain_messages no longer delivers through self.wait_first")
    if list(WaitResults._fields) != ["done", "results", "stopped"]:
        missing.append("mode's WaitResults is no longer (done, results, stopped)")
    return missing
