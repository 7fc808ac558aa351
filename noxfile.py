"""Developer sessions: nox -s tests | lint | typecheck | protos | bench | adversarial."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PROTO_SOURCE = "protos/hello.proto"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, as README.md runs it."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.17")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the packages."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate hello_protocol/hello_pb2*.py(i) from protos/hello.proto.

    The include path maps protos/ to the package name, so the generated code
    imports itself as ``hello_protocol.hello_pb2`` and nothing generic is
    installed at the top level. tests/test_protocol_drift.py fails when the
    committed files differ from a fresh generation.
    """
    session.install("grpcio-tools==1.85.1", "mypy-protobuf==5.1.0")
    session.run(
        "python",
        "-m",
        "grpc_tools.protoc",
        "-Ihello_protocol=protos",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
        # Typed stubs for the generated ChatRoomStub (grpcio-tools makes none).
        "--mypy_grpc_out=.",
        PROTO_SOURCE,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark: hello-bench with any arguments after --."""
    session.install("-e", ".")
    session.run("hello-bench", *session.posargs)


ATTACKS = (
    "rapid_reset",
    "join_burst",
    "idle_connections",
    "continuation_flood",
    "dead_peer",
)


@nox.session
def adversarial(session: nox.Session) -> None:
    """The transport attacks of tests/adversarial/, each against a fresh server; prints figures.

    About five minutes (dead_peer waits for the default 30 s bound). Name
    attacks after -- to run only those: nox -s adversarial -- rapid_reset
    """
    session.install("-e", ".[test]")
    for attack in session.posargs or ATTACKS:
        session.run("python", "-m", f"tests.adversarial.{attack}")
