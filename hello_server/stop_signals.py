"""The signals that stop hello-server (SIGINT, SIGTERM), and ignoring them once it is exiting."""

from __future__ import annotations

import asyncio
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Stop handling SIGINT and SIGTERM in ``loop`` and ignore them from now on.

    For a process that has finished its drain and is only exiting: a signal
    then has nothing left to do. Left to asyncio, closing the loop closes the
    signal wakeup descriptor before restoring the default handlers, and a
    signal in between prints "Exception ignored when trying to write to the
    signal wakeup fd" with a traceback (seen when a --workers supervisor
    forwarded a second SIGTERM to a worker that had just drained); after it,
    a late SIGINT would raise KeyboardInterrupt during the exit.
    """
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)
