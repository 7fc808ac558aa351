"""The few failures a hello client can meet, each with a clear message."""

from __future__ import annotations

import grpc


class HelloError(Exception):
    """Base class: something the server or the network refused."""


class RoomNotFound(HelloError):
    """The room does not exist: nobody is in it."""


class InvalidInput(HelloError):
    """The server (or the client, checking early) rejected an id or a text."""


class ServerUnavailable(HelloError):
    """The server cannot be reached, or is shutting down."""


class Evicted(HelloError):
    """The server disconnected this member for reading too slowly."""


class MessagesMissing(HelloError):
    """A reconnect could not recover every message sent while the connection was lost."""


class NotAuthenticated(HelloError):
    """The server needs a valid token (missing, expired or not signed by its key)."""


class PermissionDenied(HelloError):
    """The token is valid but not for the user id used (a token acts for its own user)."""


def from_rpc_error(
    error: grpc.aio.AioRpcError, target: str, *, tls: bool | None = None
) -> HelloError:
    """Map a failed call to the exception a caller can act on.

    ``tls``: whether the client used TLS, for a hint when a new connection
    is closed at once (what a TLS server does to a plaintext client, and a
    mutual-TLS server to a client without a certificate); None for calls on
    a connection that worked before, where a close means something else.
    """
    detail = error.details() or ""
    if (
        tls is not None
        and error.code() == grpc.StatusCode.UNAVAILABLE
        and "Socket closed" in detail
    ):
        hint = (
            "does the server require a client certificate? give --cert and --key"
            if tls
            else "does the server require TLS? give --tls, or --ca with its CA certificate"
        )
        return ServerUnavailable(
            f"cannot reach server {target}: the connection was closed ({hint})"
        )
    return from_status(error.code(), detail, target)


def from_status(code: grpc.StatusCode, detail: str, target: str) -> HelloError:
    """Map a gRPC status (of a call, or of one message on SendStream) to an exception."""
    detail = detail or code.name.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NotAuthenticated(f"server {target} refused the call: {detail}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"server {target} refused the call: {detail}")
    if code == grpc.StatusCode.NOT_FOUND:
        return RoomNotFound(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # gRPC core names the side whose size limit refused the message.
        if "CLIENT: Received message larger than max" in detail:
            return HelloError(
                f"server {target} sent a message larger than this client accepts ({detail}); "
                "give the client the server's text limit (max_text_bytes)"
            )
        if "larger than max" in detail:
            return InvalidInput(
                f"message larger than server {target} accepts ({detail}); "
                "the client was told a bigger text limit (max_text_bytes) than the server's"
            )
        return Evicted(detail)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        if detail == "server shutting down":
            return ServerUnavailable(f"server {target} is shutting down")
        return ServerUnavailable(f"cannot reach server {target}: {_unreachable_reason(detail)}")
    return HelloError(f"server {target} failed the call: {code.name}: {detail}")


# gRPC's connection errors are long and name internals; the usual causes, in
# the words a person would use. Anything else is passed through as it is.
_UNREACHABLE_REASONS = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "its TLS certificate is not trusted (give the CA that signed it with --ca; "
        "the certificate must also name the host you connect to)",
    ),
    ("WRONG_VERSION_NUMBER", "it does not speak TLS (leave out --tls and --ca)"),
    ("handshake failed", "the TLS handshake failed"),
    ("Connection refused", "connection refused (is hello-server running there?)"),
    ("Domain name not found", "unknown host"),
    ("DNS resolution failed", "unknown host"),
    ("Connection reset", "the connection was reset"),
    ("Socket closed", "the connection was closed"),
    ("Deadline Exceeded", "timed out"),
)


def _unreachable_reason(detail: str) -> str:
    for marker, reason in _UNREACHABLE_REASONS:
        if marker.lower() in detail.lower():
            return reason
    return detail
