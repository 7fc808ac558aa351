"""Everything the tests share, in one place; the fixtures are in conftest.py.

- `calls`: requests, acknowledged joins, reading streams and statuses.
- `processes`: hello-server as a real child process (the daemon).
- `network`: a TCP relay whose connections a test can cut.
- `terminal`: the real hello-chat command, as a subprocess, a listener or in tmux.

Nothing here sleeps to synchronise: every helper waits for an observable
event (the join acknowledgement, a message, a status, a log line, a screen)
and gives up after `TIMEOUT`, so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

# Generous: every wait normally ends in milliseconds, but a busy 2-core CI
# machine can stall a process for seconds. Only a bug should reach this.
TIMEOUT = 30.0

T = TypeVar("T")


async def within(awaitable: Awaitable[T]) -> T:
    """Await anything, bounded by `TIMEOUT`."""
    async with asyncio.timeout(TIMEOUT):
        return await awaitable
