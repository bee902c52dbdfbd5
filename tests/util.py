"""Test helpers: wait on a condition with a deadline (never sleep as synchronisation)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["free_port", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {message}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for private test services)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
