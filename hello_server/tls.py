"""The server's TLS material: read from PEM files and checked once, at start.

gRPC reads the PEM bytes only when the port is bound, and then reports a
mismatched key or a bad file as a generic "failed to bind" after logging
BoringSSL's own lines; checking here first names the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hello_server.config import ConfigError

__all__ = ["ServerTls"]


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A certificate chain and its key; with ``client_ca``, clients must present a certificate."""

    # repr=False: the key never goes into a log or a traceback.
    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_files(cls, cert: Path, key: Path, client_ca: Path | None = None) -> ServerTls:
        """Read and check the PEM files; raise ConfigError naming the file and the problem."""
        chain = _read(cert, "--tls-cert")
        private_key = _read(key, "--tls-key")
        try:
            certificates = x509.load_pem_x509_certificates(chain)
        except ValueError:
            raise ConfigError(f"--tls-cert {cert}: no PEM certificate in the file") from None
        try:
            loaded_key = serialization.load_pem_private_key(private_key, password=None)
        except (ValueError, TypeError) as error:
            # TypeError: the key is encrypted; gRPC cannot ask for a passphrase.
            reason = "it is encrypted" if isinstance(error, TypeError) else "no PEM private key"
            raise ConfigError(
                f"--tls-key {key}: {reason} (an unencrypted PEM key is needed)"
            ) from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        if loaded_key.public_key().public_bytes(encoding, public) != certificates[
            0
        ].public_key().public_bytes(encoding, public):
            raise ConfigError(
                f"--tls-key {key} does not belong to the certificate in --tls-cert {cert}"
            )
        ca = None
        if client_ca is not None:
            ca = _read(client_ca, "--tls-client-ca")
            try:
                x509.load_pem_x509_certificates(ca)
            except ValueError:
                raise ConfigError(
                    f"--tls-client-ca {client_ca}: no PEM certificate in the file"
                ) from None
        return cls(chain, private_key, ca)

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC's server credentials: client certificates required when ``client_ca`` is set."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{option} {path}: cannot read it ({error.strerror})") from None
