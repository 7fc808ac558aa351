"""Throwaway TLS material and tokens, made at test time (no key material is committed).

`Pki` writes a CA, a server certificate for 127.0.0.1/localhost and a client
certificate to a test's temporary directory; `token` signs JWTs the way an
identity service would, and `forged` makes the ones an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import trustme

from hello_client import ClientTls

# At least 32 bytes, as hello-server requires for HS256.
SECRET = "test-secret-0123456789abcdef-0123456789abcdef"


@dataclass(frozen=True)
class Pki:
    """A CA and the PEM files signed by it, in ``directory``."""

    ca: trustme.CA
    directory: Path

    @classmethod
    def make(cls, directory: Path, name: str = "ca") -> Pki:
        pki = cls(trustme.CA(), directory)
        pki.ca.cert_pem.write_to_path(str(pki.ca_file(name)))
        server = pki.ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(directory / f"{name}-server.pem"))
        server.private_key_pem.write_to_path(str(directory / f"{name}-server.key"))
        client = pki.ca.issue_cert("alice@example.test")
        client.cert_chain_pems[0].write_to_path(str(directory / f"{name}-client.pem"))
        client.private_key_pem.write_to_path(str(directory / f"{name}-client.key"))
        return pki

    def ca_file(self, name: str = "ca") -> Path:
        return self.directory / f"{name}.pem"

    @property
    def server_cert(self) -> Path:
        return next(self.directory.glob("*-server.pem"))

    @property
    def server_key(self) -> Path:
        return next(self.directory.glob("*-server.key"))

    @property
    def client_cert(self) -> Path:
        return next(self.directory.glob("*-client.pem"))

    @property
    def client_key(self) -> Path:
        return next(self.directory.glob("*-client.key"))

    def client_tls(self, *, certificate: bool = False) -> ClientTls:
        """TLS trusting this CA; with ``certificate``, presenting the client certificate."""
        if certificate:
            return ClientTls.from_files(self.ca_file(), self.client_cert, self.client_key)
        return ClientTls.from_files(self.ca_file())


def token(
    user: str,
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    expires_in: float = 600,
    **claims: Any,
) -> str:
    """A token for ``user`` as an issuer would sign it; claims given as None are left out."""
    now = int(time.time())
    payload = {"sub": user, "iat": now, "exp": now + int(expires_in), **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm)


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token put together by hand: ``alg: none`` (no key) or HMAC with any bytes as key.

    PyJWT refuses to make these (a PEM key as an HMAC secret), which is the point.
    """
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
