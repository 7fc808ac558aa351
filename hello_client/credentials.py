"""What a client proves and checks: TLS (server certificate, optionally its own) and a token."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

__all__ = ["ClientTls", "bearer_metadata", "read_token"]


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to the server: trust ``root_certificates`` (None: the system's), and for
    mutual TLS present ``certificate_chain`` with ``private_key``."""

    root_certificates: bytes | None = None
    # repr=False: key material never goes into a log or a traceback.
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
    ) -> ClientTls:
        """Read the PEM files; raise ValueError naming the one that cannot be read."""
        if (cert is None) != (key is None):
            raise ValueError("--cert and --key go together (a client certificate and its key)")
        return cls(_read(ca, "--ca"), _read(cert, "--cert"), _read(key, "--key"))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The ``authorization`` metadata every call carries (../shared/protocol.md)."""
    if token is None:
        return None
    token = token.strip()
    if not token or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("the token must be one word of printable characters")
    return (("authorization", f"Bearer {token}"),)


def read_token(path: Path) -> str:
    """A token from a file (surrounding whitespace, such as the final newline, dropped)."""
    try:
        return path.read_text().strip()
    except OSError as error:
        raise ValueError(f"--token-file {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"--token-file {path}: not a text file") from None


def _read(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise ValueError(f"{option} {path}: cannot read it ({error.strerror})") from None
