"""The reconnect policy of a room subscription: capped, jittered exponential backoff.

Retried: a stream or join that failed with UNAVAILABLE (the connection was
lost, the server restarted or is draining). Not retried: eviction
(RESOURCE_EXHAUSTED) and refusals (NOT_FOUND, INVALID_ARGUMENT,
PERMISSION_DENIED, ...): joining again would be refused again, or evicted
again. After ``give_up_seconds`` of failed attempts the subscription gives up
with ServerUnavailable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How a subscription waits between attempts to join again.

    The first wait is ``first_delay`` seconds, doubling up to ``max_delay``;
    each is spread by ``±jitter`` (a fraction) so that the members of a
    restarted server do not all come back in the same instant.
    """

    first_delay: float = 0.1
    max_delay: float = 5.0
    jitter: float = 0.2
    give_up_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        """The wait before attempt number ``attempt`` (1 for the first)."""
        base: float = min(self.max_delay, self.first_delay * 2.0 ** min(attempt - 1, 30))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


NO_RECONNECT = ReconnectPolicy(give_up_seconds=0.0)
