"""hello_client: the async library behind hello-chat, for scripts and bots.

async with ChatClient("127.0.0.1:8080") as client:
    async with await client.join("lobby", "bot") as room:
        await client.send("lobby", "bot", "hello")
        async for message in room:
            print(message.sender, message.text)
"""

from hello_client.backoff import ReconnectPolicy
from hello_client.client import ChatClient, Subscription
from hello_client.credentials import ClientTls
from hello_client.errors import (
    Evicted,
    HelloError,
    InvalidInput,
    NotAuthenticated,
    PermissionDenied,
    RoomNotFound,
    ServerUnavailable,
)
from hello_client.events import (
    ChatMessage,
    Member,
    PresenceChange,
    Reconnected,
    Reconnecting,
    RoomEvent,
)
from hello_client.sender import StreamSender

__all__ = [
    "ChatClient",
    "ChatMessage",
    "ClientTls",
    "Evicted",
    "HelloError",
    "InvalidInput",
    "Member",
    "NotAuthenticated",
    "PermissionDenied",
    "PresenceChange",
    "ReconnectPolicy",
    "Reconnected",
    "Reconnecting",
    "RoomEvent",
    "RoomNotFound",
    "ServerUnavailable",
    "StreamSender",
    "Subscription",
]
