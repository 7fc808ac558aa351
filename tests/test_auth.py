"""Token authentication: every ChatRoom RPC refused without a valid token, ids held to it.

Real servers on ephemeral ports; tokens made at test time (tests/support/security.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hello_client import ChatClient, NotAuthenticated, PermissionDenied
from hello_protocol import hello_pb2 as pb
from hello_protocol import hello_pb2_grpc
from hello_server import ChatServer, ServerConfig, run_server
from hello_server.auth import (
    LEEWAY_SECONDS,
    MAX_REMEMBERED_TOKENS,
    Identity,
    TokenVerifier,
    Unauthenticated,
)
from tests.support import within
from tests.support.calls import join_request, open_channel, receive, rpc_error
from tests.support.security import SECRET, bearer, forged, token

if TYPE_CHECKING:
    from tests.support.calls import Stub

RPCS = ("Join", "Subscribe", "SendMessage", "SendStream", "Members")


@pytest.fixture
def server_config() -> ServerConfig:
    return ServerConfig(port=0, auth=TokenVerifier.from_secret(SECRET))


@pytest.fixture
async def alice(server: ChatServer) -> AsyncIterator[ChatClient]:
    """A client with a valid token for alice."""
    async with ChatClient(server.address, token=token("alice")) as client:
        yield client


# Each bad token, made when the test runs, and what the refusal must say.
BAD_TOKENS: dict[str, tuple[Callable[[], str | None], str]] = {
    "missing": (lambda: None, "needs a token"),
    "expired": (lambda: token("alice", expires_in=-(LEEWAY_SECONDS + 60)), "expired"),
    "wrong signature": (
        lambda: token("alice", key="another-secret-that-is-long-enough-0123456789"),
        "signature is not valid",
    ),
    "alg none": (
        lambda: forged({"alg": "none", "typ": "JWT"}, {"sub": "alice", "exp": 2**40}, None),
        "algorithm is not accepted",
    ),
    "no exp": (lambda: token("alice", exp=None), "no exp claim"),
    "not a JWT": (lambda: "not-a-token", "not a well-formed JWT"),
}


async def _refusal(stub: Stub, rpc: str, metadata: Any) -> grpc.aio.AioRpcError:
    """Make ``rpc`` as alice in room lobby with ``metadata``; it must fail: its error."""
    message = pb.Message(id="alice", roomID="lobby", message="hi")
    if rpc in ("Join", "Subscribe"):
        call = getattr(stub, rpc)(join_request("lobby", "alice"), metadata=metadata)
        return await rpc_error(call.read())
    if rpc == "SendMessage":
        return await rpc_error(stub.SendMessage(message, metadata=metadata))
    if rpc == "SendStream":
        stream = stub.SendStream(metadata=metadata)  # type: ignore[call-arg]
        return await rpc_error(stream.read())
    return await rpc_error(stub.Members(pb.RoomRequest(roomID="lobby"), metadata=metadata))


async def _still_serves(address: str, signed: str | None = None) -> None:
    """A client with a valid token for carol joins, sends and receives: the server goes on."""
    async with (
        ChatClient(address, token=signed or token("carol")) as client,
        await client.join("after", "carol") as room,
    ):
        seq = await client.send("after", "carol", "still here")
        message = await within(anext(aiter(room)))
        assert (message.text, message.seq) == ("still here", seq)


class TestUnauthenticated:
    @pytest.mark.parametrize("rpc", RPCS)
    @pytest.mark.parametrize("kind", BAD_TOKENS)
    async def test_bad_token_is_refused_and_the_server_goes_on(
        self, server: ChatServer, stub: Stub, rpc: str, kind: str
    ) -> None:
        """Each RPC with a missing, expired, forged or malformed token: UNAUTHENTICATED."""
        make, reason = BAD_TOKENS[kind]
        value = make()
        error = await _refusal(stub, rpc, None if value is None else bearer(value))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        details = error.details() or ""
        assert reason in details
        assert SECRET not in details
        if value is not None:
            assert value not in details
        await _still_serves(server.address)

    async def test_authorization_that_is_not_bearer_is_refused(self, stub: Stub) -> None:
        """``authorization: Basic ...`` is not a token: UNAUTHENTICATED, saying the form."""
        error = await _refusal(stub, "SendMessage", (("authorization", "Basic YWxpY2U6eA=="),))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer <token>" in (error.details() or "")

    async def test_a_token_within_the_leeway_is_accepted(
        self, server: ChatServer, alice: ChatClient
    ) -> None:
        """A token expired for less than the leeway still works (clock skew between hosts)."""
        late = token("bob", expires_in=-(LEEWAY_SECONDS - 20))
        async with (
            ChatClient(server.address, token=late) as bob,
            await bob.join("skew", "bob"),
        ):
            assert [m.user for m in await alice.members("skew")] == ["bob"]

    async def test_library_raises_not_authenticated(self, server: ChatServer) -> None:
        """ChatClient without a token raises NotAuthenticated with the server's reason."""
        async with ChatClient(server.address) as client:
            with pytest.raises(NotAuthenticated, match="needs a token"):
                await client.join("lobby", "alice")

    async def test_health_and_reflection_stay_open(self, server: ChatServer) -> None:
        """Health checks need no token: load balancers and probes have none."""
        async with open_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="hello.ChatRoom"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def test_unknown_methods_stay_unimplemented(self, channel: grpc.aio.Channel) -> None:
        """The guard wraps the service's methods only: any other name is UNIMPLEMENTED."""
        for n in range(3):
            call = channel.unary_unary(
                f"/hello.ChatRoom/Nope{n}",
                request_serializer=pb.RoomRequest.SerializeToString,
                response_deserializer=pb.MemberList.FromString,
            )
            error = await rpc_error(call(pb.RoomRequest(), metadata=bearer(token("alice"))))
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED


class TestRememberedTokens:
    def test_a_remembered_token_names_the_same_user(self) -> None:
        verifier = TokenVerifier.from_secret(SECRET)
        signed = token("alice", name="Alice")
        assert verifier.verify(signed) == verifier.verify(signed) == Identity("alice", "Alice")

    def test_forged_tokens_are_never_remembered(self) -> None:
        """A refused token is refused again, however often it comes."""
        verifier = TokenVerifier.from_secret(SECRET)
        forgery = token("alice", key="another-secret-that-is-long-enough-0123456789")
        for _ in range(3):
            with pytest.raises(Unauthenticated, match="signature is not valid"):
                verifier.verify(forgery)

    def test_memory_is_bounded(self) -> None:
        """Past MAX_REMEMBERED_TOKENS the oldest are forgotten (and verified again if used)."""
        verifier = TokenVerifier.from_secret(SECRET)
        tokens = [token(f"user-{n}") for n in range(MAX_REMEMBERED_TOKENS + 5)]
        for signed in tokens:
            verifier.verify(signed)
        assert len(verifier._passed) == MAX_REMEMBERED_TOKENS
        assert tokens[0] not in verifier._passed
        assert verifier.verify(tokens[0]) == Identity("user-0", "")


class TestPermissionDenied:
    @pytest.mark.parametrize("rpc", ["Join", "Subscribe"])
    async def test_join_as_another_user(self, stub: Stub, rpc: str) -> None:
        """alice's token cannot join as bob: PERMISSION_DENIED naming both."""
        call = getattr(stub, rpc)(join_request("lobby", "bob"), metadata=bearer(token("alice")))
        error = await rpc_error(call.read())
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'bob' is not the token's user 'alice'" in (error.details() or "")

    async def test_send_message_as_another_user(self, alice: ChatClient, stub: Stub) -> None:
        """alice's token cannot SendMessage as bob, even into a room she is in."""
        async with await alice.join("lobby", "alice"):
            message = pb.Message(id="bob", roomID="lobby", message="it was bob")
            error = await rpc_error(stub.SendMessage(message, metadata=bearer(token("alice"))))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "sender id 'bob'" in (error.details() or "")

    async def test_library_raises_permission_denied(self, alice: ChatClient) -> None:
        async with await alice.join("lobby", "alice"):
            with pytest.raises(PermissionDenied, match="not the token's user"):
                await alice.send("lobby", "bob", "it was bob")

    async def test_send_stream_refuses_the_message_and_keeps_the_stream(
        self, alice: ChatClient, stub: Stub
    ) -> None:
        """On SendStream a message as another user is answered PERMISSION_DENIED; the rest go."""
        async with await alice.join("lobby", "alice") as room:
            stream = stub.SendStream(metadata=bearer(token("alice")))  # type: ignore[call-arg]
            replies: list[pb.Exit] = []
            for sender in ("alice", "bob", "alice"):
                await within(stream.write(pb.Message(id=sender, roomID="lobby", message=sender)))
                reply = await within(stream.read())
                assert isinstance(reply, pb.Exit)
                replies.append(reply)
            await stream.done_writing()
            assert [r.success for r in replies] == [True, False, True]
            assert replies[1].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert "not the token's user" in replies[1].message
            delivered = [await within(anext(aiter(room))) for _ in range(2)]
        assert [(m.sender, m.seq) for m in delivered] == [
            ("alice", replies[0].seq),
            ("alice", replies[2].seq),
        ]

    async def test_members_needs_only_a_valid_token(
        self, server: ChatServer, alice: ChatClient
    ) -> None:
        """Members names no user: any valid token may list a room."""
        async with (
            await alice.join("lobby", "alice"),
            ChatClient(server.address, token=token("dave")) as dave,
        ):
            assert [m.user for m in await dave.members("lobby")] == ["alice"]


class TestNames:
    async def test_the_tokens_name_wins_over_the_requests(self, server: ChatServer) -> None:
        """With a name claim, joins and messages carry the token's name, whatever was sent."""
        signed = token("alice", name="Alice Liddell")
        async with (
            ChatClient(server.address, token=signed) as client,
            await client.join("names", "alice", "Mallory") as room,
        ):
            [member] = await client.members("names")
            assert member.name == "Alice Liddell"
            await client.send("names", "alice", "hello", name="Mallory")
            message = await within(anext(aiter(room)))
        assert message.name == "Alice Liddell"

    async def test_without_a_name_claim_the_requests_name_stands(
        self, server: ChatServer, alice: ChatClient
    ) -> None:
        async with await alice.join("names", "alice", "Al") as room:
            await alice.send("names", "alice", "hello", name="Al")
            message = await within(anext(aiter(room)))
        assert message.name == "Al"


class TestAudienceAndIssuer:
    @pytest.fixture
    def server_config(self) -> ServerConfig:
        verifier = TokenVerifier.from_secret(SECRET, audience="hello", issuer="https://id.test")
        return ServerConfig(port=0, auth=verifier)

    @pytest.mark.parametrize(
        ("claims", "reason"),
        [
            ({"iss": "https://id.test"}, "no aud claim"),
            ({"aud": "other", "iss": "https://id.test"}, "another audience"),
            ({"aud": "hello", "iss": "https://evil.test"}, "another issuer"),
        ],
    )
    async def test_wrong_audience_or_issuer_is_refused(
        self, stub: Stub, claims: dict[str, Any], reason: str
    ) -> None:
        error = await _refusal(stub, "Members", bearer(token("alice", **claims)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in (error.details() or "")

    async def test_the_right_audience_and_issuer_are_accepted(self, server: ChatServer) -> None:
        signed = token("alice", aud="hello", iss="https://id.test")
        async with (
            ChatClient(server.address, token=signed) as client,
            await client.join("a", "alice"),
        ):
            assert [m.user for m in await client.members("a")] == ["alice"]


def _public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class TestPublicKeys:
    @pytest.mark.parametrize(
        ("make_key", "algorithm"),
        [
            (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
            (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        ],
    )
    async def test_signed_tokens_work_and_hs_confusion_is_refused(
        self,
        tmp_path: Path,
        make_key: Callable[[], rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
        algorithm: str,
    ) -> None:
        """A token signed with the private key works; one HMAC-signed with the public key
        (the classic HS/RS confusion) and one HS256 with any secret are UNAUTHENTICATED."""
        private_key = make_key()
        public_pem = _public_pem(private_key)
        path = tmp_path / "jwt.pub"
        path.write_bytes(public_pem)
        config = ServerConfig(port=0, auth=TokenVerifier.from_public_key(path))
        async with run_server(config) as server:
            good = token("alice", key=private_key, algorithm=algorithm)
            async with (
                ChatClient(server.address, token=good) as client,
                await client.join("pk", "alice") as room,
            ):
                seq = await client.send("pk", "alice", "signed")
                assert (await within(anext(aiter(room)))).seq == seq
            confused = forged(
                {"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": 2**40}, public_pem
            )
            async with open_channel(server.address) as channel:
                stub = hello_pb2_grpc.ChatRoomStub(channel)
                for bad in (confused, token("alice")):
                    error = await _refusal(stub, "Join", bearer(bad))
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "algorithm is not accepted" in (error.details() or "")
            await _still_serves(
                server.address, token("carol", key=private_key, algorithm=algorithm)
            )


class TestOpenServer:
    async def test_without_auth_ids_are_trusted_and_tokens_ignored(self) -> None:
        """No auth configured: any user id is taken as given, with or without a token."""
        async with (
            run_server(ServerConfig(port=0)) as server,
            ChatClient(server.address, token=token("alice")) as client,
            await client.join("open", "bob") as room,
        ):
            await client.send("open", "mallory", "anyone may post as anyone")
            message = await within(anext(aiter(room)))
            assert message.sender == "mallory"


async def test_a_raw_subscribe_with_a_valid_token_gets_messages(
    alice: ChatClient, stub: Stub
) -> None:
    """A raw Subscribe with a valid token gets messages as without authentication."""
    call = stub.Subscribe(join_request("raw", "alice"), metadata=bearer(token("alice")))
    await within(call.initial_metadata())
    await alice.send("raw", "alice", "one")
    [message] = await receive(call, 1)
    assert message.message == "one"
    call.cancel()


class TestRefusalLogs:
    async def test_bad_tokens_and_forbidden_sends_log_once_per_client(
        self, alice: ChatClient, stub: Stub, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Three bad tokens and three sends as another user: one warning line each."""
        caplog.set_level(logging.WARNING, logger="hello_server")
        async with await alice.join("lobby", "alice"):
            for _ in range(3):
                error = await rpc_error(stub.Members(pb.RoomRequest(roomID="lobby")))
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                message = pb.Message(id="bob", roomID="lobby", message="it was bob")
                error = await rpc_error(stub.SendMessage(message, metadata=bearer(token("alice"))))
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        lines = [r.getMessage() for r in caplog.records]
        tokens = [line for line in lines if line.startswith("token refused for client ")]
        assert len(tokens) == 1, lines
        assert "this server needs a token" in tokens[0]
        assert SECRET not in "\n".join(lines)
        forbidden = [
            line for line in lines if line.startswith("message refused for caller of 'bob'")
        ]
        assert len(forbidden) == 1, lines
        assert "not the token's user 'alice'" in forbidden[0]
