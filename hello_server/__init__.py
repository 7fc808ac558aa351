"""hello_server: the hello.ChatRoom gRPC server as a library and a daemon.

`ChatServer` owns a server's lifecycle, `run_server` scopes one to a block,
`ServerConfig` is its single configuration object (with `ServerTls` and
`TokenVerifier` for TLS and tokens), and `Hub` holds the rooms.
"""

from hello_protocol.validation import InputLimits
from hello_server.auth import TokenVerifier
from hello_server.config import ServerConfig
from hello_server.hub import Hub, QueueLimits
from hello_server.memory import MemoryBudget
from hello_server.server import ChatServer, run_server
from hello_server.tls import ServerTls

__all__ = [
    "ChatServer",
    "Hub",
    "InputLimits",
    "MemoryBudget",
    "QueueLimits",
    "ServerConfig",
    "ServerTls",
    "TokenVerifier",
    "run_server",
]
