"""The memory settings: validated when the config is built, and reachable from the CLI."""

from __future__ import annotations

import pytest

from hello_protocol.wire import DEFAULT_MAX_TEXT_BYTES
from hello_server import MemoryBudget, QueueLimits, ServerConfig
from hello_server.config import DEFAULT_QUEUE_BYTES, ConfigError, largest_delivery_bytes
from tests.support.processes import run_server_command


class TestMemoryConfig:
    def test_the_default_member_queue_holds_the_largest_delivered_message(self) -> None:
        """The 1 MiB default holds a maximum-size message with its envelope, several times."""
        config = ServerConfig()
        assert config.queue.max_bytes == DEFAULT_QUEUE_BYTES == 1 << 20
        assert config.queue.max_bytes >= 8 * largest_delivery_bytes(config.limits)
        assert config.queue.max_bytes <= config.memory.connection_bytes
        assert config.memory.connection_bytes <= config.memory.total_bytes

    @pytest.mark.parametrize(
        ("settings", "reason"),
        [
            (
                {"queue": QueueLimits(4096, DEFAULT_MAX_TEXT_BYTES)},
                "must hold at least one largest delivered message",
            ),
            (
                {"connection_queue_bytes": 1 << 19},
                "connection queue budget (524288) must hold at least one full member queue",
            ),
            (
                {"memory_budget_bytes": 1 << 22, "connection_queue_bytes": 1 << 23},
                "memory budget (4194304) must be at least the connection queue budget",
            ),
            ({"stalled_close_seconds": 0.0}, "stalled close delay"),
        ],
        ids=[
            "queue-below-largest-message",
            "connection-below-queue",
            "total-below-connection",
            "delay",
        ],
    )
    def test_inconsistent_limits_are_refused_with_the_setting_named(
        self, settings: dict[str, object], reason: str
    ) -> None:
        """A limit that could never hold what a smaller one allows is a configuration error."""
        with pytest.raises(ConfigError) as refused:
            ServerConfig(**settings)  # type: ignore[arg-type]
        assert reason in str(refused.value)

    def test_default_budgets_grow_to_hold_a_larger_member_queue(self) -> None:
        """Raising only the member queue raises the default budgets with it, not an error."""
        config = ServerConfig(queue=QueueLimits(100_000, 64 << 20))
        assert config.memory == MemoryBudget(total_bytes=256 << 20, connection_bytes=64 << 20)
        bigger = ServerConfig(queue=QueueLimits(100_000, 512 << 20))
        assert bigger.memory == MemoryBudget(total_bytes=512 << 20, connection_bytes=512 << 20)

    def test_the_cli_takes_the_budget_from_the_environment(self) -> None:
        """HELLO_MEMORY_BUDGET reaches the config: a budget below the connection's is refused."""
        result = run_server_command(["--port", "0"], {"HELLO_MEMORY_BUDGET": "1000"})
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("hello-server: error: memory budget (1000)"), result.stderr
