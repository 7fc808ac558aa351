"""Run one hello-chat mode to its end and turn how it ended into an exit code.

Every failure ends as one line on stderr; never a traceback (set
``HELLO_DEBUG=1`` to see one for an unexpected error). SIGTERM and SIGHUP
cancel the mode, so it still leaves its room, and exit 128 + the signal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import traceback
from collections.abc import Coroutine
from typing import Any

from hello_client.errors import HelloError, MessagesMissing, ServerUnavailable
from hello_client.terminal import DEBUG_ENV, discard_stdout, print_error

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "run_mode",
]

EXIT_OK = 0
EXIT_FAILED = 1  # the server refused: room not found, invalid input, evicted
EXIT_USAGE = 2  # bad options (click's own code for usage errors)
EXIT_UNREACHABLE = 3  # the server cannot be reached, or went away
EXIT_MISSING = 4  # listen --count done, but a reconnect may have lost messages
EXIT_INTERRUPTED = 130  # 128 + SIGINT: a scripting command stopped by Ctrl-C


def run_mode(mode: Coroutine[Any, Any, None], *, interrupted: int = EXIT_INTERRUPTED) -> int:
    """Run ``mode``; return its exit code after reporting any failure in one line.

    ``interrupted`` is the code for Ctrl-C: 130 for the scripting commands,
    0 for the interactive room, where Ctrl-C is a way to leave.
    """
    try:
        asyncio.run(_until_signal(mode))
    except KeyboardInterrupt:
        return interrupted
    except HelloError as error:
        print_error(str(error))
        if isinstance(error, MessagesMissing):
            return EXIT_MISSING
        return EXIT_UNREACHABLE if isinstance(error, ServerUnavailable) else EXIT_FAILED
    except _Terminated as terminated:
        return 128 + terminated.signum
    except BrokenPipeError:
        # The reader of stdout went away: that is its choice, not our failure.
        discard_stdout()
        return EXIT_OK
    except Exception as error:  # no traceback at the terminal
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print_error(f"unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 for details)")
        return EXIT_FAILED
    return EXIT_OK


class _Terminated(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _until_signal(mode: Coroutine[Any, Any, None]) -> None:
    """Run ``mode``; SIGTERM or SIGHUP cancel it, so it still leaves the room."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await mode
    except asyncio.CancelledError:
        if received:
            raise _Terminated(received[0]) from None
        raise
