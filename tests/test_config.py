"""ServerConfig: the queue byte bound must hold the largest message a member can be sent."""

from __future__ import annotations

import pytest

from hello_protocol.validation import InputLimits
from hello_protocol.wire import DEFAULT_MAX_TEXT_BYTES, ENVELOPE_ALLOWANCE_BYTES
from hello_server import QueueLimits, ServerConfig, run_server
from hello_server.config import ConfigError, largest_delivery_bytes
from tests.support.calls import joined, open_stub, read_messages, send

WIDE = "\N{GRINNING FACE}"  # 4 bytes in UTF-8: the widest an id character can be


class TestQueueByteBound:
    def test_a_bound_of_the_text_limit_is_refused_naming_both_sizes(self) -> None:
        """queue bytes == the text limit cannot hold a delivery (text + ids + envelope): refused."""
        largest = largest_delivery_bytes(InputLimits())
        with pytest.raises(ConfigError) as refused:
            ServerConfig(queue=QueueLimits(100, DEFAULT_MAX_TEXT_BYTES))
        assert f"queue byte bound ({DEFAULT_MAX_TEXT_BYTES})" in str(refused.value)
        assert f"({largest} bytes:" in str(refused.value)

    def test_one_byte_short_of_the_largest_delivery_is_refused(self) -> None:
        """The bound is exact: the largest delivery's size is accepted, one byte less is not."""
        largest = largest_delivery_bytes(InputLimits())
        ServerConfig(queue=QueueLimits(100, largest))
        with pytest.raises(ConfigError):
            ServerConfig(queue=QueueLimits(100, largest - 1))

    def test_the_largest_delivery_counts_ids_and_the_allowance(self) -> None:
        """Longer ids raise the bound by 4 bytes per character each; the allowance is on top."""
        short = largest_delivery_bytes(InputLimits(max_id_chars=1, max_text_bytes=1000))
        long = largest_delivery_bytes(InputLimits(max_id_chars=101, max_text_bytes=1000))
        assert long - short >= 2 * 100 * 4
        assert short > 1000 + ENVELOPE_ALLOWANCE_BYTES

    async def test_the_smallest_accepted_bound_delivers_the_largest_message(self) -> None:
        """With the bound at its minimum, a maximum-size message from the longest ids arrives."""
        limits = InputLimits(max_id_chars=16, max_text_bytes=4096)
        config = ServerConfig(
            port=0, limits=limits, queue=QueueLimits(10, largest_delivery_bytes(limits))
        )
        room, sender, text = WIDE * 16, WIDE * 16, "é" * 2048
        async with run_server(config) as server, open_stub(server.address) as stub:
            member = await joined(stub, room, "reader")
            assert (await send(stub, room, sender, text)).success
            [message] = await read_messages(member, 1)
            assert (message.roomID, message.id, message.message) == (room, sender, text)
            member.cancel()


def test_a_history_budget_below_one_rooms_history_is_refused() -> None:
    with pytest.raises(ConfigError, match="history budget"):
        ServerConfig(history_budget_bytes=1024)


def test_a_redis_url_of_another_scheme_is_refused_naming_the_schemes() -> None:
    with pytest.raises(ConfigError, match=r"redis://, rediss://, unix://"):
        ServerConfig(port=0, redis_url="http://127.0.0.1:6379")


def test_several_workers_without_redis_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--workers 2 needs --redis"):
        ServerConfig(port=0, workers=2)
    ServerConfig(port=0, workers=2, redis_url="redis://127.0.0.1:6379")


@pytest.mark.parametrize("ttl", [0.0, 0.2, 3601.0])
def test_a_presence_ttl_out_of_range_is_refused(ttl: float) -> None:
    with pytest.raises(ConfigError, match=r"presence TTL must be between 0\.3 and 3600 s"):
        ServerConfig(port=0, presence_ttl_seconds=ttl)
    ServerConfig(port=0, presence_ttl_seconds=0.3)
