"""The daemon's one configuration object, validated when it is built."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hello_protocol.wire import DEFAULT_PORT, ENVELOPE_ALLOWANCE_BYTES
from hello_server.hub import QueueLimits
from hello_server.transport import TransportLimits
from hello_server.validation import InputLimits

LOG_LEVELS = ("debug", "info", "warning", "error")

# Busy Subscribe streams gather for this long per batch: long enough to cut
# the number of writes (each costs far more than its bytes), short enough to
# keep latency low. Quiet streams never wait (see ChatRoomService._write_batches).
DEFAULT_LINGER_SECONDS = 0.005

# A member may fall this far behind before it is evicted. Measured on a busy
# 2-core machine (docs/benchmarks.md): healthy readers stay far below both.
DEFAULT_QUEUE_MESSAGES = 4096
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024


class ConfigError(ValueError):
    """A setting is out of range; the text names the setting."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `ChatServer` needs; the CLI only builds one of these."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    limits: InputLimits = field(default_factory=InputLimits)
    queue: QueueLimits = field(
        default_factory=lambda: QueueLimits(DEFAULT_QUEUE_MESSAGES, DEFAULT_QUEUE_BYTES)
    )
    grace_seconds: float = 5.0
    log_level: str = "info"
    batch_linger_seconds: float = DEFAULT_LINGER_SECONDS
    transport: TransportLimits = field(default_factory=TransportLimits)

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if self.queue.max_messages < 1:
            raise ConfigError("queue size must be at least 1 message")
        if self.queue.max_bytes < self.limits.max_text_bytes:
            raise ConfigError(
                f"queue byte bound ({self.queue.max_bytes}) must hold at least one "
                f"maximum-size message ({self.limits.max_text_bytes} bytes)"
            )
        if not 0 <= self.batch_linger_seconds <= 1:
            raise ConfigError("batch linger must be between 0 and 1000 ms")
        if self.grace_seconds < 0:
            raise ConfigError("grace period must not be negative")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def address(self) -> str:
        """The address to bind, bracketing IPv6 literals."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def max_receive_bytes(self) -> int:
        """The gRPC message size limit: the largest text plus its envelope."""
        return self.limits.max_text_bytes + ENVELOPE_ALLOWANCE_BYTES

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]
