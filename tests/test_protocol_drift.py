"""The committed generated code matches protos/hello.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# mypy-protobuf's plugin, installed beside the interpreter (it may not be on PATH).
MYPY_GRPC_PLUGIN = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
GENERATED = ("hello_pb2.py", "hello_pb2.pyi", "hello_pb2_grpc.py", "hello_pb2_grpc.pyi")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """Regenerating with `nox -s protos`' command gives the committed files byte for byte."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-Ihello_protocol={ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--plugin=protoc-gen-mypy_grpc={MYPY_GRPC_PLUGIN}",
            f"--mypy_grpc_out={tmp_path}",
            str(ROOT / "protos" / "hello.proto"),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "hello_protocol" / name).read_text()
        committed = (ROOT / "hello_protocol" / name).read_text()
        assert fresh == committed, f"hello_protocol/{name} is stale: run `nox -s protos`"
