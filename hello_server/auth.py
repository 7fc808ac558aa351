"""Bearer-token authentication of hello.ChatRoom calls (../shared/protocol.md).

`TokenVerifier` checks a JWT with PyJWT: one algorithm family fixed by the
configured key (HS256 for a secret; RS*/ES* for a public key), so neither
``alg: none`` nor a token HMAC-signed with the public key (HS/RS confusion)
can pass; ``exp`` and ``sub`` required; ``aud``/``iss`` when configured.

`guard` wraps the ChatRoom service's handlers: each call's token is verified
once, when the call starts (UNAUTHENTICATED if it fails), and the caller's
`Identity` is held for the call's own task. The service asks `authorized_name`
whether a join's user id or a message's sender id is the caller's
(PERMISSION_DENIED if not); with no authentication configured nobody is held
and it trusts ids as given. Health and reflection are other services: open.

A token is checked on every call (a stream is one call). Its signature and
claims are verified once: a token that passed is remembered (the exact string,
which only a holder of the key could have signed) with its ``exp``, and
accepted again only until then. The key never changes while the server runs,
so nothing a remembered token was checked for can have changed but time.
PyJWT takes hundreds of microseconds per token on a busy machine (it parses
the token and prepares the key every time), a remembered token under one;
the memory is bounded. Refusals say what is wrong with the token, never the
key or the token itself.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hello_server.config import ConfigError
from hello_server.log_limits import RefusalLog
from hello_server.logs import fields

__all__ = [
    "LEEWAY_SECONDS",
    "MIN_SECRET_BYTES",
    "Forbidden",
    "Identity",
    "TokenVerifier",
    "authorized_name",
    "guard",
]

# Clock difference tolerated on ``exp`` (and ``nbf``/``iat``) between the
# token's issuer and this server: NTP keeps hosts within far less, and half a
# minute more of a token's life is no real gain to an attacker.
LEEWAY_SECONDS: Final = 30
# RFC 7518 3.2: an HS256 key at least as long as the hash (256 bits).
MIN_SECRET_BYTES: Final = 32
# Tokens remembered as verified, at most (oldest forgotten first), and only
# tokens of ordinary size: at most 4 MiB together.
MAX_REMEMBERED_TOKENS: Final = 1024
MAX_REMEMBERED_TOKEN_CHARS: Final = 4096
# What `hello-server token` mints by default: a working day's dev session.
DEFAULT_TOKEN_TTL_SECONDS: Final = 3600

_BEARER = "bearer "
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class Unauthenticated(Exception):
    """The call's token is missing or not valid; the text is for the client."""


class Forbidden(Exception):
    """A valid token, used for a user it does not name; the text is for the client."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the token says the caller is."""

    user_id: str
    name: str  # the token's display name; "" when it has none


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Checks tokens against one key; build it with `from_secret` or `from_public_key`."""

    key: Any = field(repr=False)  # the HMAC secret, or a cryptography public key
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None
    # Tokens that passed: the identity and until when (exp + leeway, Unix time).
    _passed: dict[str, tuple[Identity, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_secret(
        cls, secret: str, *, audience: str | None = None, issuer: str | None = None
    ) -> TokenVerifier:
        """HS256 with a shared secret (at least `MIN_SECRET_BYTES` bytes)."""
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes "
                "(e.g. openssl rand -hex 32)"
            )
        return cls(secret.encode(), ("HS256",), audience or None, issuer or None)

    @classmethod
    def from_public_key(
        cls, path: Path, *, audience: str | None = None, issuer: str | None = None
    ) -> TokenVerifier:
        """RS*/PS* for an RSA key, ES* matching the curve of an EC key (PEM)."""
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ConfigError(
                f"--auth-jwt-public-key {path}: cannot read it ({error.strerror})"
            ) from None
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise ConfigError(
                f"--auth-jwt-public-key {path}: no PEM public key in the file "
                "(openssl pkey -pubout makes one from a private key)"
            ) from None
        if isinstance(key, rsa.RSAPublicKey):
            algorithms: tuple[str, ...] = _RSA_ALGORITHMS
        elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
            algorithms = (_EC_ALGORITHMS[key.curve.name],)
        else:
            raise ConfigError(
                f"--auth-jwt-public-key {path}: an RSA or EC (P-256, P-384, P-521) key is needed"
            )
        return cls(key, algorithms, audience or None, issuer or None)

    @property
    def describe(self) -> str:
        """For the ready line: what the server checks, nothing secret."""
        return f"authentication: JWT {', '.join(self.algorithms)}"

    def verify(self, token: str) -> Identity:
        """The token's identity; raise `Unauthenticated` saying what is wrong."""
        passed = self._passed.get(token)
        if passed is not None:
            identity, until = passed
            if time.time() < until:
                return identity
            del self._passed[token]  # expired: verified again, to say so
        identity, until = self._verify(token)
        if len(token) <= MAX_REMEMBERED_TOKEN_CHARS:
            if len(self._passed) >= MAX_REMEMBERED_TOKENS:
                del self._passed[next(iter(self._passed))]  # the oldest
            self._passed[token] = (identity, until)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise Unauthenticated(self._reason(error)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token's sub claim (the user id) must be a non-empty string")
        name = claims.get("name", "")
        if not isinstance(name, str):
            raise Unauthenticated("the token's name claim must be a string")
        # PyJWT has checked that exp is a number.
        return Identity(subject, name), float(claims["exp"]) + LEEWAY_SECONDS

    def _reason(self, error: jwt.PyJWTError) -> str:
        # Most specific first: several of these subclass DecodeError.
        if isinstance(error, jwt.ExpiredSignatureError):
            return "the token has expired"
        if isinstance(error, jwt.ImmatureSignatureError):
            return "the token is not valid yet (nbf or iat in the future)"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"the token has no {error.claim} claim (tokens must name a user and expire)"
        if isinstance(error, jwt.InvalidAudienceError):
            return "the token is for another audience (aud claim)"
        if isinstance(error, jwt.InvalidIssuerError):
            return "the token is from another issuer (iss claim)"
        if isinstance(error, jwt.InvalidSignatureError):
            return "the token's signature is not valid (signed with another key?)"
        if isinstance(error, jwt.InvalidAlgorithmError):
            return (
                "the token's signing algorithm is not accepted "
                f"(this server accepts {', '.join(self.algorithms)})"
            )
        if isinstance(error, jwt.DecodeError):
            return "the token is not a well-formed JWT"
        return "the token is not valid"

    def mint(
        self, user: str, name: str = "", ttl_seconds: float = DEFAULT_TOKEN_TTL_SECONDS
    ) -> str:
        """A token for ``user`` signed with the secret (HS256 only: a public key cannot sign)."""
        if self.algorithms != ("HS256",):
            raise ConfigError(
                "minting needs the HS256 secret (--auth-jwt-secret or --auth-jwt-secret-file); "
                "with a public key, tokens come from whoever holds the private key"
            )
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl_seconds)}
        if name:
            claims["name"] = name
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self.key, algorithm="HS256")


# The identity of the call this task serves; None when authentication is off.
_caller: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "hello_caller", default=None
)


def authorized_name(what: str, user_id: str, name: str) -> str:
    """The display name to use for ``user_id``; raise `Forbidden` if it is not the caller.

    ``what`` names the field ("user id", "sender id"). The token's ``name``
    claim, when it has one, wins over the request's: whoever issued the token
    vouches for it. Without one, the request's name stands.

    Call it in the task of the call being served (the service's handlers
    are): the caller is held there, and elsewhere nobody is, which reads as
    "no authentication". tests/test_auth.py fails if a send path breaks this.
    """
    caller = _caller.get()
    if caller is None:
        return name
    if user_id != caller.user_id:
        raise Forbidden(
            f"the {what} {user_id!r} is not the token's user {caller.user_id!r}: "
            "a token only acts for its own user"
        )
    return caller.name or name


_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Behavior = Callable[[_Request, Any], Awaitable[_Response]]


def guard(
    handler: grpc.GenericRpcHandler[Any, Any], verifier: TokenVerifier, refusals: RefusalLog
) -> grpc.GenericRpcHandler[Any, Any]:
    """``handler``'s methods, each refusing a call whose token does not verify.

    Refusals are logged through ``refusals``: once per client address and
    interval, however many calls a client makes with a bad token.
    """
    return _Guarded(handler, verifier, refusals)


class _Guarded(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(
        self,
        inner: grpc.GenericRpcHandler[Any, Any],
        verifier: TokenVerifier,
        refusals: RefusalLog,
    ) -> None:
        self._inner = inner
        self._verifier = verifier
        self._refusals = refusals
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is None:
            # Only the service's own handful of methods are kept: any name a
            # client sends reaches here, and unknown ones must not fill a dict.
            wrapped = self._wrap(self._inner.service(handler_call_details))
            if wrapped is not None:
                self._handlers[method] = wrapped
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any] | None
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if handler is None:
            return None
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        wrapped = {
            kind: self._authenticated(getattr(handler, kind))
            for kind in kinds
            if getattr(handler, kind) is not None
        }
        # grpc's RpcMethodHandler is a namedtuple.
        return handler._replace(**wrapped)  # type: ignore[attr-defined,no-any-return]

    def _authenticated(self, behavior: _Behavior[Any, Any]) -> _Behavior[Any, Any]:
        verify = self._verifier.verify
        refusals = self._refusals

        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                identity = verify(_bearer_token(context.invocation_metadata() or ()))
            except Unauthenticated as error:
                peer = context.peer()
                # Keyed by address, not connection: a client opening many
                # connections is still one client.
                address = peer.rsplit(":", 1)[0]
                refusals.refused(
                    "token",
                    f"client {address}",
                    str(error),
                    fields(peer=peer, status="UNAUTHENTICATED"),
                )
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
            # Each call runs in a task of its own: the identity is this call's only.
            held = _caller.set(identity)
            try:
                return await behavior(request, context)
            finally:
                _caller.reset(held)

        return authenticated


def _bearer_token(metadata: Any) -> str:
    """The token of the ``authorization: Bearer <token>`` header; Unauthenticated if none."""
    for key, value in metadata:
        if key != "authorization":
            continue
        if isinstance(value, bytes) or not value.lower().startswith(_BEARER):
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        return str(value[len(_BEARER) :].strip())
    raise Unauthenticated(
        "this server needs a token: send 'authorization: Bearer <token>' metadata "
        "(hello-chat --token)"
    )
