"""hello_server: the hello.ChatRoom gRPC server as a library and a daemon.

`ChatServer` owns a server's lifecycle, `run_server` scopes one to a block,
`ServerConfig` is its single configuration object, and `Hub` holds the rooms.
"""

from hello_protocol.validation import InputLimits
from hello_server.config import ServerConfig
from hello_server.hub import Hub, QueueLimits
from hello_server.memory import MemoryBudget
from hello_server.server import ChatServer, run_server

__all__ = [
    "ChatServer",
    "Hub",
    "InputLimits",
    "MemoryBudget",
    "QueueLimits",
    "ServerConfig",
    "run_server",
]
