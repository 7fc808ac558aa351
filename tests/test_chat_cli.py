"""hello-chat for scripts: send, listen, piped input, help and exit codes.

Every test runs the installed command as a child process against a real
hello-server child process; messages are observed through ``hello-chat
listen --json`` (a real member) or sent through the library.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from importlib import metadata

import pytest

from hello_client.address import server_target
from tests.support import TIMEOUT
from tests.support.processes import ServerProcess, server_process
from tests.support.terminal import (
    Listener,
    assert_one_error_line,
    chat_command,
    child_env,
    listening,
    run_chat,
    send,
)


@pytest.fixture(scope="module")
def dead_address() -> Iterator[str]:
    """An address where nothing listens: a bound socket that never listens refuses."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def who(server: ServerProcess, room: str, user: str = "alice") -> list[str]:
    return ["--server", server.address, "--room", room, "--user", user]


class TestSend:
    def test_send_delivers_one_message_and_exits_0(self, daemon: ServerProcess) -> None:
        """`send` delivers its text to the room's members and prints nothing."""
        with listening(daemon.address, "send-ok") as observer:
            result = run_chat(["send", *who(daemon, "send-ok"), "hello, room"])
            assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
            message = observer.next_message()
        assert message["id"] == "alice"
        assert message["room"] == "send-ok"
        assert message["text"] == "hello, room"

    def test_words_are_joined_and_the_server_comes_from_the_environment(
        self, daemon: ServerProcess
    ) -> None:
        """Several TEXT words are sent as one message; HELLO_SERVER names the server."""
        with listening(daemon.address, "send-env") as observer:
            env = child_env(HELLO_SERVER=daemon.address)
            result = run_chat(
                ["send", "--room", "send-env", "--user", "cron", "backup", "done"], env=env
            )
            assert result.returncode == 0, result.stderr
            assert observer.next_text() == "backup done"

    def test_a_room_nobody_is_in_gives_one_line_and_exit_1(self, daemon: ServerProcess) -> None:
        """Sending to a room without members: exit 1, one line naming the room."""
        result = run_chat(["send", *who(daemon, "empty-room"), "anyone?"])
        assert result.returncode == 1
        assert_one_error_line(result, "room 'empty-room' does not exist: nobody has joined it")

    def test_invalid_input_gives_one_line_and_exit_1(self, daemon: ServerProcess) -> None:
        """An id the server refuses: exit 1 with the server's reason."""
        with listening(daemon.address, "send-bad"):
            result = run_chat(["send", *who(daemon, "send-bad", " padded"), "hi"])
        assert result.returncode == 1
        assert_one_error_line(result, "sender id ' padded' starts or ends with whitespace")

    def test_text_over_the_limit_is_refused_before_sending(self, daemon: ServerProcess) -> None:
        """69,700 characters: exit 1, the limit named in the server's words, not gRPC's."""
        with listening(daemon.address, "send-big"):
            result = run_chat(["send", *who(daemon, "send-big"), "x" * 69_700])
        assert result.returncode == 1
        assert_one_error_line(result, "message text is 69700 bytes; the limit is 65536 bytes")

    def test_no_server_gives_one_line_and_exit_3(self, dead_address: str) -> None:
        """Nothing listening at --server: exit 3, one line saying so."""
        result = run_chat(["send", "--server", dead_address, "--room", "r", "--user", "u", "x"])
        assert result.returncode == 3
        assert_one_error_line(result, f"cannot reach server {dead_address}", "connection refused")


class TestListen:
    def test_json_count_prints_n_messages_then_exits_0(self, daemon: ServerProcess) -> None:
        """`listen --json --count 2` prints two JSON lines with the documented keys and exits."""
        listener = Listener(daemon.address, "listen-json", "logger", ["--count", "2"])
        try:
            assert listener.wait_joined() == "joined listen-json as logger"
            seqs = [send(daemon.address, "listen-json", "bob", f"m{n}") for n in (1, 2)]
            first, second = listener.next_message(), listener.next_message()
            assert listener.process.wait(TIMEOUT) == 0
            assert listener.stdout.get(timeout=TIMEOUT) is None  # nothing after the 2nd
        finally:
            listener.stop()
        assert set(first) == {"id", "name", "room", "text", "timestamp", "seq"}
        assert (first["id"], first["room"], first["text"]) == ("bob", "listen-json", "m1")
        assert [first["seq"], second["seq"]] == seqs
        assert second["text"] == "m2"
        stamp = datetime.fromisoformat(first["timestamp"])
        assert first["timestamp"].endswith("Z")
        assert stamp.utcoffset() == timedelta(0)

    def test_plain_output_is_one_inert_line_per_message(self, daemon: ServerProcess) -> None:
        """Without --json (and not on a terminal): `HH:MM:SS sender: text`, controls escaped."""
        process = subprocess.Popen(
            [*chat_command(), "listen", *who(daemon, "listen-plain", "me"), "--count", "2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            assert process.stderr is not None
            assert process.stderr.readline() == "joined listen-plain as me\n"
            send(daemon.address, "listen-plain", "eve", "\x1b[2Jtwo\nlines")
            send(daemon.address, "listen-plain", "me", "mine")
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2
        assert lines[0][8:] == " eve: \\x1b[2Jtwo\\nlines"
        assert lines[1][8:] == " me (you): mine"
        datetime.strptime(lines[0][:8], "%H:%M:%S")

    def test_ctrl_c_stops_listen_with_exit_130(self, daemon: ServerProcess) -> None:
        """SIGINT ends listen without a traceback, status 130, and the member leaves."""
        listener = Listener(daemon.address, "listen-int", "logger")
        try:
            listener.wait_joined()
            listener.process.send_signal(signal.SIGINT)
            assert listener.process.wait(TIMEOUT) == 130
            assert "Traceback" not in listener.drain_stderr()
        finally:
            listener.stop()

    def test_no_server_gives_one_line_and_exit_3(self, dead_address: str) -> None:
        """listen with nothing at --server: exit 3, one line."""
        result = run_chat(["listen", "--server", dead_address, "--room", "r", "--user", "u"])
        assert result.returncode == 3
        assert_one_error_line(result, "cannot reach server")


class TestNamesHistoryWho:
    def test_send_and_piped_lines_carry_the_name(self, daemon: ServerProcess) -> None:
        with listening(daemon.address, "named") as observer:
            result = run_chat(["send", *who(daemon, "named"), "--name", "Alice L", "hi"])
            assert result.returncode == 0, result.stderr
            piped = run_chat([*who(daemon, "named", "bob"), "--name", "Bob"], stdin="yo\n")
            assert piped.returncode == 0, piped.stderr
            first, second = observer.next_message(), observer.next_message()
        assert (first["id"], first["name"], first["text"]) == ("alice", "Alice L", "hi")
        assert (second["id"], second["name"], second["text"]) == ("bob", "Bob", "yo")

    def test_listen_history_prints_earlier_messages_first(self, daemon: ServerProcess) -> None:
        with listening(daemon.address, "told") as observer:
            for n in range(4):
                send(daemon.address, "told", "bob", f"m{n}")
            assert [observer.next_text() for _ in range(4)] == ["m0", "m1", "m2", "m3"]
            late = Listener(daemon.address, "told", "late", ["--history", "2", "--count", "3"])
            try:
                late.wait_joined()
                send(daemon.address, "told", "bob", "live")
                texts = [late.next_text() for _ in range(3)]
                assert late.process.wait(TIMEOUT) == 0
            finally:
                late.stop()
        assert texts == ["m2", "m3", "live"]

    def test_listen_json_marks_replayed_lines_as_history(self, daemon: ServerProcess) -> None:
        """Lines of the join's replay carry "history": true; live lines are as they always were."""
        with listening(daemon.address, "marked") as observer:
            for n in range(3):
                send(daemon.address, "marked", "bob", f"m{n}")
            live = [observer.next_message() for _ in range(3)]
            late = Listener(daemon.address, "marked", "late", ["--history", "2", "--count", "3"])
            try:
                late.wait_joined()
                send(daemon.address, "marked", "bob", "now")
                lines = [late.next_message() for _ in range(3)]
                assert late.process.wait(TIMEOUT) == 0
            finally:
                late.stop()
        assert [(m["text"], m.get("history")) for m in lines] == [
            ("m1", True),
            ("m2", True),
            ("now", None),
        ]
        assert [m["seq"] for m in lines] == [2, 3, 4]
        assert all("history" not in m for m in [*live, lines[2]])

    def test_who_lists_members_as_lines_and_json(self, daemon: ServerProcess) -> None:
        with listening(daemon.address, "crowd", "ann"), listening(daemon.address, "crowd", "bob"):
            plain = run_chat(["who", "--server", daemon.address, "--room", "crowd"])
            as_json = run_chat(["who", "--server", daemon.address, "--room", "crowd", "--json"])
        assert (plain.returncode, plain.stdout, plain.stderr) == (0, "ann\nbob\n", "")
        rows = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [(r["id"], r["name"], r["sessions"]) for r in rows] == [
            ("ann", "", 1),
            ("bob", "", 1),
        ]
        assert all(r["since"].endswith("Z") for r in rows)

    def test_who_in_an_empty_room_is_exit_1(self, daemon: ServerProcess) -> None:
        result = run_chat(["who", "--server", daemon.address, "--room", "nobody"])
        assert_one_error_line(result, "does not exist")
        assert result.returncode == 1


class TestListenAcrossRestart:
    def test_listen_rejoins_a_restarted_server_and_reports_the_gap(self) -> None:
        """stderr says lost/rejoined/may be missing; --count reached after that: exit 4."""
        with server_process() as first:
            port = first.address.rsplit(":", 1)[1]
            listener = Listener(first.address, "kept", "logger", ["--count", "2"])
            try:
                listener.wait_joined()
                send(first.address, "kept", "bob", "before")
                assert listener.next_text() == "before"
                first.signal(signal.SIGTERM)
                assert "reconnecting" in listener.next_err_line()
                assert first.wait() == 0
                with server_process(["--port", port]) as second:
                    line = listener.next_err_line()
                    assert line == (
                        "hello-chat: warning: rejoined kept; messages sent meanwhile may be missing"
                    )
                    send(second.address, "kept", "bob", "after")
                    assert listener.next_message()["seq"] == 1
                    assert listener.process.wait(TIMEOUT) == 4
                    assert "may be missing" in listener.drain_stderr().splitlines()[-1]
            finally:
                listener.stop()


class TestPipedInput:
    def test_each_line_is_sent_in_order_blank_lines_skipped(self, daemon: ServerProcess) -> None:
        """Piped lines (any line ending, last one unterminated) arrive in order; exit 0."""
        with listening(daemon.address, "piped") as observer:
            result = run_chat(
                who(daemon, "piped", "piper"),
                stdin="first\n\n   \nsecond\r\nthird é\n[b]fourth[/b]",
            )
            assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
            texts = [observer.next_message() for _ in range(4)]
        assert [m["text"] for m in texts] == ["first", "second", "third é", "[b]fourth[/b]"]
        assert {m["id"] for m in texts} == {"piper"}
        assert [m["seq"] for m in texts] == sorted(m["seq"] for m in texts)

    def test_no_input_sends_nothing_and_exits_0(self, daemon: ServerProcess) -> None:
        """Empty stdin: nothing to send, nothing to fail; exit 0 even without members."""
        result = run_chat(who(daemon, "nobody-here"), stdin="")
        assert (result.returncode, result.stderr) == (0, "")

    def test_a_room_nobody_is_in_fails_the_first_line_with_exit_1(
        self, daemon: ServerProcess
    ) -> None:
        """Piped mode does not join, so a room without members is an error, not silence."""
        result = run_chat(who(daemon, "piped-empty"), stdin="hello\nworld\n")
        assert result.returncode == 1
        assert_one_error_line(
            result, "line 1 not sent: room 'piped-empty' does not exist: nobody has joined it"
        )

    def test_a_refused_line_stops_the_input_there(self, daemon: ServerProcess) -> None:
        """A line the server refuses: the lines before it went out, none after; exit 1."""
        too_long = "x" * (64 * 1024 + 1)
        with listening(daemon.address, "piped-stop") as observer:
            result = run_chat(who(daemon, "piped-stop", "piper"), stdin=f"one\n{too_long}\nthree\n")
            assert result.returncode == 1
            assert_one_error_line(result, "line 2 not sent: message text is 65537 bytes")
            send(daemon.address, "piped-stop", "marker", "after")
            assert observer.next_text() == "one"
            assert observer.next_text() == "after"  # "three" was never sent

    def test_invalid_utf8_is_refused_with_its_line_number(self, daemon: ServerProcess) -> None:
        """Bytes that are not UTF-8 stop the input with exit 1 and the line number."""
        with listening(daemon.address, "piped-bytes"):
            result = run_chat(who(daemon, "piped-bytes"), stdin=b"ok\n\xff\xfe\n")
        assert result.returncode == 1
        assert_one_error_line(result, "line 2 not sent: it is not valid UTF-8 text")

    @pytest.mark.parametrize("stdin", ["x\n", ""], ids=["a-line", "no-lines"])
    def test_no_server_gives_one_line_and_exit_3(self, dead_address: str, stdin: str) -> None:
        """Piped input with nothing at --server: exit 3, one line, even when there is no line."""
        result = run_chat(["--server", dead_address, "--room", "r", "--user", "u"], stdin=stdin)
        assert result.returncode == 3
        assert_one_error_line(result, f"cannot reach server {dead_address}")


class TestUsage:
    @pytest.mark.parametrize("command", [[], ["send"], ["listen"]], ids=["room", "send", "listen"])
    def test_every_command_has_help_with_examples(self, command: list[str]) -> None:
        """--help works on every command and shows examples and exit codes."""
        result = run_chat([*command, "--help"])
        assert result.returncode == 0, result.stderr
        assert "Examples:" in result.stdout
        assert "Exit codes:" in result.stdout
        assert "hello-chat" in result.stdout

    def test_python_m_hello_client_is_the_same_command(self) -> None:
        """`python -m hello_client` runs hello-chat too."""
        result = subprocess.run(
            [sys.executable, "-m", "hello_client", "--help"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0
        assert result.stdout.startswith("Usage: hello-chat ")

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            ([], "missing --room and --user (see hello-chat --help)"),
            (["--room", "r"], "missing --user"),
            (["send", "--room", "r", "hi"], "missing --user (see hello-chat send --help)"),
            (["listen", "--room", "r", "--user", "u", "--count", "0"], "--count"),
            (["listen", "--room", "r", "--user", "u", "--count", "x"], "--count"),
            (["send", "--room", "r", "--user", "u"], "TEXT"),
            (["--bogus"], "no such option: --bogus"),
            (["listen", "--bogus"], "no such option: --bogus"),
            (["who"], "missing --room (see hello-chat who --help)"),
            (["shout"], "no such command"),
        ],
    )
    def test_usage_errors_are_one_line_and_exit_2(self, args: list[str], fragment: str) -> None:
        """Missing options, bad values, unknown options: one `hello-chat: error:` line, exit 2."""
        result = run_chat(args, stdin="")
        assert result.returncode == 2
        assert_one_error_line(result, fragment)

    def test_version(self) -> None:
        """--version prints the installed version and exits 0."""
        result = run_chat(["--version"])
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"hello-chat {metadata.version('hello-chat')}\n"


class TestServerOption:
    @pytest.mark.parametrize(
        ("address", "fragment"),
        [
            ("127.0.0.1:99999", "the port 99999 is not in 1..65535"),
            ("127.0.0.1:0", "the port 0 is not in 1..65535"),
            (":8080", "the host is missing"),
            ("http://127.0.0.1:8080", "give HOST:PORT without a scheme"),
            ("localhost:", "the port after ':' is missing"),
            ("host:http", "the port 'http' is not a number"),
            ("::1", "put an IPv6 address in brackets: [::1]:8080"),
            ("[::1", "closing bracket"),
            ("[nope]:80", "is not an IPv6 address"),
            ("a b:80", "is not a host name or IP address"),
        ],
    )
    @pytest.mark.parametrize("where", ["before", "after"])
    def test_a_bad_address_is_a_usage_error(self, address: str, fragment: str, where: str) -> None:
        """An address that cannot work: exit 2 naming the problem, no connection attempted."""
        server = ["--server", address]
        send = ["send", "--room", "r", "--user", "u", "hi"]
        args = [*server, *send] if where == "before" else [*send, *server]
        result = run_chat(args)
        assert result.returncode == 2
        assert_one_error_line(result, f"invalid value for --server: {address!r}: ", fragment)

    def test_a_bad_address_from_the_environment_names_the_variable(self) -> None:
        """HELLO_SERVER is checked like --server, and the message says where it came from."""
        result = run_chat(
            ["listen", "--room", "r", "--user", "u"], env=child_env(HELLO_SERVER=":1")
        )
        assert result.returncode == 2
        assert_one_error_line(result, "invalid value for HELLO_SERVER: ':1': the host is missing")

    @pytest.mark.parametrize(
        ("address", "target"),
        [
            ("localhost", "localhost:8080"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("[::1]", "[::1]:8080"),
            ("[::1]:9000", "[::1]:9000"),
            ("chat.example:08080", "chat.example:8080"),
        ],
    )
    def test_good_addresses_become_grpc_targets(self, address: str, target: str) -> None:
        """A bare host gets the default port; IPv6 stays in brackets."""
        assert server_target(address) == target

    def test_server_room_and_user_may_come_before_the_command(self, daemon: ServerProcess) -> None:
        """`hello-chat --server X --room R --user U send TEXT` works, as --help lists them there."""
        with listening(daemon.address, "before") as observer:
            result = run_chat(["--server", daemon.address, "send", "--room", "before",
                               "--user", "early", "first"])  # fmt: skip
            assert (result.returncode, result.stderr) == (0, "")
            assert observer.next_text() == "first"
            result = run_chat(["--server", daemon.address, "--room", "before",
                               "--user", "early", "send", "second"])  # fmt: skip
            assert (result.returncode, result.stderr) == (0, "")
            assert observer.next_message()["text"] == "second"

    def test_the_value_after_the_command_wins(
        self, daemon: ServerProcess, dead_address: str
    ) -> None:
        """Given in both places, the option after the command name is the one used."""
        with listening(daemon.address, "after-wins") as observer:
            result = run_chat(["--server", dead_address, "--room", "elsewhere", "send",
                               "--server", daemon.address, "--room", "after-wins",
                               "--user", "u", "hi"])  # fmt: skip
            assert (result.returncode, result.stderr) == (0, "")
            assert observer.next_text() == "hi"
