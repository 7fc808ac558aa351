"""TLS: the server with a certificate (and optionally requiring client certificates);
clients that get it wrong fail at once with a reason, and hello-chat chats over it.

Certificates come from a throwaway CA made at test time (tests/support/security.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hello_client import ChatClient, ClientTls, ServerUnavailable
from hello_server import ChatServer, ServerConfig, run_server
from hello_server.tls import ServerTls
from tests.support import within
from tests.support.processes import run_server_command, server_process
from tests.support.security import SECRET, Pki, token
from tests.support.terminal import Listener, assert_one_error_line, child_env, run_chat


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[ChatServer]:
    config = ServerConfig(port=0, tls=ServerTls.from_files(pki.server_cert, pki.server_key))
    async with run_server(config) as server:
        yield server


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[ChatServer]:
    tls = ServerTls.from_files(pki.server_cert, pki.server_key, pki.ca_file())
    async with run_server(ServerConfig(port=0, tls=tls)) as server:
        yield server


async def _chat(address: str, tls: ClientTls | None) -> None:
    """Join, send, receive: raises what the client raises."""
    async with ChatClient(address, tls=tls) as client, await client.join("tls", "alice") as room:
        seq = await client.send("tls", "alice", "over TLS")
        message = await within(anext(aiter(room)))
        assert (message.text, message.seq) == ("over TLS", seq)


class TestClientAgainstTlsServer:
    async def test_chat_with_the_right_ca(self, tls_server: ChatServer, pki: Pki) -> None:
        await _chat(tls_server.address, pki.client_tls())

    async def test_plaintext_client_is_told_the_server_may_need_tls(
        self, tls_server: ChatServer
    ) -> None:
        with pytest.raises(ServerUnavailable, match="does the server require TLS"):
            await _chat(tls_server.address, None)

    async def test_wrong_ca_is_not_trusted(self, tls_server: ChatServer, tmp_path: Path) -> None:
        """A CA that did not sign the server's certificate: the certificate is not trusted."""
        (tmp_path / "other").mkdir()
        other = Pki.make(tmp_path / "other")
        with pytest.raises(ServerUnavailable, match="TLS certificate is not trusted"):
            await _chat(tls_server.address, other.client_tls())

    async def test_system_roots_do_not_trust_a_private_ca(self, tls_server: ChatServer) -> None:
        with pytest.raises(ServerUnavailable, match="TLS certificate is not trusted"):
            await _chat(tls_server.address, ClientTls())

    async def test_tls_client_against_plaintext_server(self, pki: Pki) -> None:
        async with run_server(ServerConfig(port=0)) as server:
            with pytest.raises(ServerUnavailable, match="does not speak TLS"):
                await _chat(server.address, pki.client_tls())


class TestMutualTls:
    async def test_client_certificate_is_required(self, mtls_server: ChatServer, pki: Pki) -> None:
        with pytest.raises(ServerUnavailable, match="require a client certificate"):
            await _chat(mtls_server.address, pki.client_tls())

    async def test_client_certificate_from_another_ca_is_refused(
        self, mtls_server: ChatServer, pki: Pki, tmp_path: Path
    ) -> None:
        (tmp_path / "other").mkdir()
        other = Pki.make(tmp_path / "other")
        tls = ClientTls.from_files(pki.ca_file(), other.client_cert, other.client_key)
        with pytest.raises(ServerUnavailable):
            await _chat(mtls_server.address, tls)

    async def test_chat_with_a_client_certificate(self, mtls_server: ChatServer, pki: Pki) -> None:
        await _chat(mtls_server.address, pki.client_tls(certificate=True))


class TestServerStart:
    def test_missing_certificate_file_is_a_usage_error(self, pki: Pki, tmp_path: Path) -> None:
        missing = tmp_path / "nope.pem"
        result = run_server_command(["--tls-cert", str(missing), "--tls-key", str(pki.server_key)])
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"hello-server: error: --tls-cert {missing}: cannot read it (No such file or directory)"
        ]

    def test_key_of_another_certificate_is_a_usage_error(self, pki: Pki, tmp_path: Path) -> None:
        (tmp_path / "other").mkdir()
        other = Pki.make(tmp_path / "other")
        result = run_server_command(
            ["--tls-cert", str(pki.server_cert), "--tls-key", str(other.server_key)]
        )
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("hello-server: error: --tls-key ")
        assert "does not belong to the certificate" in line

    def test_a_certificate_is_not_a_key(self, pki: Pki) -> None:
        result = run_server_command(
            ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_cert)]
        )
        assert result.returncode == 2
        assert "no PEM private key" in result.stderr

    def test_cert_without_key_is_a_usage_error(self, pki: Pki) -> None:
        result = run_server_command(["--tls-cert", str(pki.server_cert)])
        assert result.returncode == 2
        assert "--tls-cert and --tls-key go together" in result.stderr


class TestHelloChatOverTls:
    def test_chat_with_ca_and_token_and_refusals(self, pki: Pki) -> None:
        """hello-chat --ca with a token chats with a TLS + auth server; without --ca or with
        a token for another user it fails with one line and a non-zero exit."""
        args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
        env = {"HELLO_AUTH_JWT_SECRET": SECRET}
        with server_process(args, env) as server:
            ready = server.log[-1]
            assert "(TLS; authentication: JWT HS256)" in ready
            listener = Listener(
                server.address,
                "secure",
                "alice",
                env=child_env(HELLO_CA=str(pki.ca_file()), HELLO_TOKEN=token("alice")),
            )
            try:
                listener.wait_joined()
                sent = run_chat(
                    [
                        "--ca",
                        str(pki.ca_file()),
                        "--token",
                        token("bob"),
                        "send",
                        "--server",
                        server.address,
                        "--room",
                        "secure",
                        "--user",
                        "bob",
                        "hello over TLS",
                    ]
                )
                assert sent.returncode == 0, sent.stderr
                message = listener.next_message()
                assert (message["id"], message["text"]) == ("bob", "hello over TLS")
            finally:
                listener.stop()

            who = ["who", "--server", server.address, "--room", "secure"]
            plaintext = run_chat(["--token", token("bob"), *who])
            assert plaintext.returncode == 3
            assert_one_error_line(plaintext, "does the server require TLS")

            impostor = run_chat(
                [
                    "--ca",
                    str(pki.ca_file()),
                    "--token",
                    token("bob"),
                    "send",
                    "--server",
                    server.address,
                    "--room",
                    "secure",
                    "--user",
                    "alice",
                    "it was alice",
                ]
            )
            assert impostor.returncode == 1
            assert_one_error_line(impostor, "not the token's user 'bob'")

            no_token = run_chat(["--ca", str(pki.ca_file()), *who])
            assert no_token.returncode == 1
            assert_one_error_line(no_token, "needs a token")
