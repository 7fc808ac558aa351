"""hello-server --config FILE, --print-config, the ready line and ``hello-server token``.

The real command, as a child process: the file's settings apply, the
environment overrides the file and the command line overrides both.
"""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hello_client import ChatClient, NotAuthenticated
from tests.support.processes import run_server_command, server_process
from tests.support.security import SECRET


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _printed(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    result = run_server_command([*args, "--print-config"], env)
    assert result.returncode == 0, result.stderr
    settings: dict[str, object] = tomllib.loads(result.stdout)
    return settings


class TestPrecedence:
    def test_file_then_environment_then_command_line(self, tmp_path: Path) -> None:
        """Each setting: the command line over the environment over the file over the default."""
        config = _write(
            tmp_path / "hello.toml",
            'port = 9000\nhistory-size = 10\nqueue_size = 100\nlog-level = "debug"\n',
        )
        settings = _printed(
            ["--config", str(config), "--port", "9200"],
            {"HELLO_PORT": "9100", "HELLO_HISTORY_SIZE": "20"},
        )
        assert settings["port"] == 9200  # command line over environment and file
        assert settings["history-size"] == 20  # environment over file
        assert settings["queue-size"] == 100  # file (underscores read as dashes)
        assert settings["log-level"] == "debug"
        assert settings["grace"] == 5.0  # default

    def test_config_from_the_environment(self, tmp_path: Path) -> None:
        config = _write(tmp_path / "hello.toml", "history-size = 7\n")
        assert _printed([], {"HELLO_CONFIG": str(config)})["history-size"] == 7

    def test_the_file_applies_to_the_running_server(self, tmp_path: Path) -> None:
        """Not only printed: a server started with the file requires tokens, as it says."""
        config = _write(tmp_path / "hello.toml", f'auth-jwt-secret = "{SECRET}"\n')
        with server_process(["--config", str(config)]) as server:
            assert "authentication: JWT HS256" in server.log[-1]

            async def refused() -> None:
                async with ChatClient(server.address) as client:
                    with pytest.raises(NotAuthenticated):
                        await client.members("lobby")

            asyncio.run(refused())


class TestErrors:
    def test_unknown_key_is_named(self, tmp_path: Path) -> None:
        config = _write(tmp_path / "hello.toml", "port = 9000\nhistroy-size = 5\n")
        result = run_server_command(["--config", str(config)])
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("hello-server: error: ")
        assert "unknown setting 'histroy-size'" in line

    def test_not_toml(self, tmp_path: Path) -> None:
        config = _write(tmp_path / "hello.toml", "port = \n")
        result = run_server_command(["--config", str(config)])
        assert result.returncode == 2
        assert "is not valid TOML" in result.stderr

    def test_missing_file(self, tmp_path: Path) -> None:
        result = run_server_command(["--config", str(tmp_path / "none.toml")])
        assert result.returncode == 2
        assert "cannot read" in result.stderr

    def test_a_wrong_value_names_the_option(self, tmp_path: Path) -> None:
        config = _write(tmp_path / "hello.toml", 'port = "eighty"\n')
        result = run_server_command(["--config", str(config)])
        assert result.returncode == 2
        assert "--port" in result.stderr

    def test_settings_that_are_not_settings_are_unknown(self, tmp_path: Path) -> None:
        """--config and --print-config are about the command, not settings."""
        config = _write(tmp_path / "hello.toml", "print-config = true\n")
        result = run_server_command(["--config", str(config)])
        assert result.returncode == 2
        assert "unknown setting 'print-config'" in result.stderr


class TestPrintConfig:
    def test_the_secret_is_masked_wherever_it_came_from(self, tmp_path: Path) -> None:
        config = _write(tmp_path / "hello.toml", f'auth-jwt-secret = "{SECRET}"\n')
        for args, env in (
            (["--config", str(config)], None),
            ([], {"HELLO_AUTH_JWT_SECRET": SECRET}),
            (["--auth-jwt-secret", SECRET], None),
        ):
            result = run_server_command([*args, "--print-config"], env)
            assert result.returncode == 0, result.stderr
            assert SECRET not in result.stdout + result.stderr
            assert tomllib.loads(result.stdout)["auth-jwt-secret"] == "********"

    def test_the_printed_configuration_is_a_config_file(self, tmp_path: Path) -> None:
        """What --print-config prints can be read back as --config and prints the same."""
        first = run_server_command(["--history-size", "12", "--print-config"])
        saved = _write(tmp_path / "saved.toml", first.stdout)
        again = _printed(["--config", str(saved)])
        assert again == tomllib.loads(first.stdout)
        assert again["history-size"] == 12

    def test_an_invalid_configuration_is_not_printed(self) -> None:
        result = run_server_command(["--auth-jwt-secret", "short", "--print-config"])
        assert result.returncode == 2
        assert result.stdout == ""
        assert "at least 32 bytes" in result.stderr


class TestReadyLine:
    def test_an_open_server_says_so(self) -> None:
        with server_process() as server:
            assert server.log[-1].endswith(
                f"hello-server ready on {server.address} "
                "(plaintext; open: no authentication, user ids trusted as sent)"
            )


class TestMintToken:
    def test_minted_token_is_accepted_for_its_user(self, tmp_path: Path) -> None:
        """``hello-server token`` with the server's config file makes a token the server takes,
        carrying the name; the same token cannot act as another user."""
        config = _write(tmp_path / "hello.toml", f'auth-jwt-secret = "{SECRET}"\nport = 1\n')
        minted = run_server_command(
            ["token", "--config", str(config), "--user", "alice", "--name", "Alice", "--ttl", "5m"]
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        with server_process(["--config", str(config)]) as server:

            async def use() -> None:
                async with (
                    ChatClient(server.address, token=token) as client,
                    await client.join("minted", "alice"),
                ):
                    [member] = await client.members("minted")
                    assert (member.user, member.name) == ("alice", "Alice")

            asyncio.run(use())

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--user", "alice"], "no secret to sign with"),
            (["--user", "alice", "--auth-jwt-secret", SECRET, "--ttl", "soon"], "not a duration"),
            (["--auth-jwt-secret", SECRET], "Missing option '--user'"),
        ],
    )
    def test_mint_errors_are_one_line(self, args: list[str], message: str) -> None:
        result = run_server_command(["token", *args])
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("hello-server token: error: ")
        assert message in line

    def test_a_public_key_cannot_mint(self, tmp_path: Path) -> None:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        path = tmp_path / "jwt.pub"
        path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        result = run_server_command(["token", "--user", "a", "--auth-jwt-public-key", str(path)])
        assert result.returncode == 2
        assert "minting needs the HS256 secret" in result.stderr
