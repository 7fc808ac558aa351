"""hello-chat's own use of the process's standard streams.

One line per error on stderr, gRPC's C-core kept off the terminal, and a
stdout whose reader went away pointed at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys

from hello_client.render import inert

__all__ = ["DEBUG_ENV", "PROG", "discard_stdout", "print_error", "quiet_grpc_core"]

PROG = "hello-chat"
DEBUG_ENV = "HELLO_DEBUG"


def print_error(message: str) -> None:
    """``hello-chat: error: MESSAGE`` as one line on stderr, control characters inert."""
    print(f"{PROG}: error: {inert(message)}", file=sys.stderr, flush=True)


def discard_stdout() -> None:
    """Point stdout at /dev/null, so that the final flush at exit cannot fail again.

    For when the reader of stdout went away (``listen | head -1``).
    """
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def quiet_grpc_core() -> None:
    """Keep gRPC's C-core log lines off the terminal; hello-chat reports problems itself.

    The C-core writes straight to file descriptor 2, and logs some ordinary
    events even at its default verbosity (an INFO line when a shutting-down
    server sends GOAWAY); GRPC_VERBOSITY only counts if set before grpc is
    imported, which the package import has done by now. So fd 2 goes to
    /dev/null and Python's ``sys.stderr`` moves to a copy of the real one.
    Setting HELLO_DEBUG, GRPC_VERBOSITY or GRPC_TRACE leaves fd 2 alone.
    """
    if any(os.environ.get(name) for name in (DEBUG_ENV, "GRPC_VERBOSITY", "GRPC_TRACE")):
        return
    try:
        real_stderr = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no stderr at all: nothing to protect
        return
    sys.stderr.flush()
    sys.stderr = open(  # noqa: SIM115 - lives as long as the process
        real_stderr, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace"
    )
    os.dup2(devnull, 2)
    os.close(devnull)
