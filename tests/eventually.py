"""Poll until a check passes, instead of sleeping for a guessed time.

A check passes when it returns without raising AssertionError and its result is not False; the last
failure is re-raised at the deadline, so the test report shows what was still wrong.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


def _failed(result: Any) -> AssertionError | None:
    return AssertionError("check returned False") if result is False else None


def assert_eventually(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Call `fn` until it passes; returns its result. AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            failure = _failed(result)
        except AssertionError as exc:
            failure = exc
        if failure is None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {failure}") from failure
        time.sleep(interval)


async def assert_eventually_async(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """assert_eventually for the event loop: `fn` may be sync or return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            failure = _failed(result)
        except AssertionError as exc:
            failure = exc
        if failure is None:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {failure}") from failure
        await asyncio.sleep(interval)
