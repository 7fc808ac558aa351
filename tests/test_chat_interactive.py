"""hello-chat's interactive room in real terminals (tmux), against a real hello-server.

Each terminal is a tmux pane running the installed hello-chat; the screen is
read back with capture-pane, so what is asserted is what a person would see.
The rendering helpers are also pinned down directly, on Rich consoles of a
fixed width.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from rich.console import Console

from hello_client import ChatMessage
from hello_client.render import (
    PALETTE,
    inert,
    inert_text,
    message_json,
    message_line,
    message_renderable,
    user_colour,
)
from tests.support.processes import ServerProcess, server_process
from tests.support.terminal import TMUX, Tmux, listening, prompt_line, send, wait_until_room_gone

needs_tmux = pytest.mark.skipif(TMUX is None, reason="the terminal tests drive tmux")


@pytest.fixture
def term() -> Iterator[Tmux]:
    terminals = Tmux()
    try:
        yield terminals
    finally:
        terminals.close()


def join(term: Tmux, server: ServerProcess, name: str, room: str, width: int = 80) -> None:
    """Start hello-chat in terminal ``name`` and wait for its prompt."""
    term.start(name, ["--server", server.address, "--room", room, "--user", name], width=width)
    # The notice is printed before the prompt starts, but reaches the screen
    # through patch_stdout's writer, which can come after the first prompt.
    term.wait_for(
        name, lambda screen: f"joined {room} as {name}" in screen and f"[{room}] {name}>" in screen
    )


def settled(term: Tmux, name: str, text: str, prompt: str) -> str:
    """Wait until ``text`` is on the screen with ``prompt`` redrawn below it.

    Printing above the prompt erases and redraws it, so a capture taken in
    between can miss the prompt line; the settled screen is what a person sees.
    """
    return term.wait_for(name, lambda screen: text in screen and prompt_line(screen) == prompt)


@needs_tmux
class TestChatting:
    def test_a_line_typed_in_one_terminal_shows_in_the_other(
        self, daemon: ServerProcess, term: Tmux
    ) -> None:
        """Two people in a room: alice's line appears on bob's screen, marked as hers on hers."""
        join(term, daemon, "alice", "two")
        join(term, daemon, "bob", "two")
        term.type("alice", "hello bob")
        term.keys("alice", "Enter")
        settled(term, "bob", "alice: hello bob", "[two] bob>")
        alice = settled(term, "alice", "alice (you): hello bob", "[two] alice>")
        # The accepted input is not left behind as a second copy of the line.
        assert alice.count("hello bob") == 1

    def test_a_half_typed_line_survives_an_incoming_message(
        self, daemon: ServerProcess, term: Tmux
    ) -> None:
        """A message arriving mid-typing prints above the prompt; the partial line stays, whole."""
        with listening(daemon.address, "half") as observer:
            join(term, daemon, "bob", "half")
            term.type("bob", "half-typ")
            term.wait_for("bob", "[half] bob> half-typ")
            send(daemon.address, "half", "carol", "interrupting you")
            assert observer.next_text() == "interrupting you"
            # While the message is printed the prompt is briefly redrawn;
            # what must come out is the message above the intact partial line.
            screen = settled(term, "bob", "carol: interrupting you", "[half] bob> half-typ")
            assert "carol: interrupting you" in screen.splitlines()[-2]
            term.type("bob", "ed line")
            term.keys("bob", "Enter")
            assert observer.next_text() == "half-typed line"
            term.wait_for("bob", "bob (you): half-typed line")

    def test_up_recalls_the_previous_line(self, daemon: ServerProcess, term: Tmux) -> None:
        """Up brings back the last line sent; Enter sends it again."""
        with listening(daemon.address, "history") as observer:
            join(term, daemon, "dora", "history")
            term.type("dora", "say it twice")
            term.keys("dora", "Enter")
            assert observer.next_text() == "say it twice"
            term.keys("dora", "Up")
            term.wait_for("dora", lambda s: prompt_line(s) == "[history] dora> say it twice")
            term.keys("dora", "Enter")
            assert observer.next_text() == "say it twice"

    def test_empty_lines_are_not_sent_and_help_lists_commands(
        self, daemon: ServerProcess, term: Tmux
    ) -> None:
        """Enter on an empty or blank line sends nothing; /help lists /quit and is not sent."""
        with listening(daemon.address, "quiet") as observer:
            join(term, daemon, "erin", "quiet")
            term.keys("erin", "Enter")
            term.type("erin", "   ")
            term.keys("erin", "Enter")
            term.type("erin", "/help")
            term.keys("erin", "Enter")
            screen = term.wait_for("erin", "/quit")
            assert "/help" in screen
            term.type("erin", "//slash is sent")
            term.keys("erin", "Enter")
            # Nothing reached the room before this line.
            assert observer.next_message()["text"] == "/slash is sent"

    def test_a_line_stops_at_the_message_limit(self, daemon: ServerProcess, term: Tmux) -> None:
        """70,000 characters typed without bracketed paste: the line stops at 65,536 bytes.

        hello-chat says why as the limit is reached, and Enter sends what was
        kept (rather than failing after the fact, or spending seconds of CPU
        on one key-binding lookup per character).
        """
        with listening(daemon.address, "limit") as observer:
            join(term, daemon, "lena", "limit")
            for _ in range(70):
                term.type("lena", "x" * 1000)
            term.wait_for_line("lena", "the message limit is 65536 bytes; the line stops there")
            term.keys("lena", "Enter")
            assert observer.next_text() == "x" * 65536

    def test_typed_ahead_keys_keep_their_order(self, daemon: ServerProcess, term: Tmux) -> None:
        """Characters and Enter arriving in one burst: each line is sent as typed."""
        with listening(daemon.address, "burst") as observer:
            join(term, daemon, "mia", "burst")
            term.keys("mia", "one two", "Enter", "three", "Enter")
            assert observer.next_text() == "one two"
            assert observer.next_text() == "three"

    def test_long_messages_wrap_on_a_narrow_terminal(
        self, daemon: ServerProcess, term: Tmux
    ) -> None:
        """On a 30-column terminal a long message wraps onto several lines, every word shown."""
        join(term, daemon, "fay", "narrow", width=30)
        words = [f"word{n}" for n in range(20)] + ["x" * 45]
        send(daemon.address, "narrow", "gus", " ".join(words))
        screen = settled(term, "fay", "word19", "[narrow] fay>")
        assert all(len(line) <= 30 for line in screen.splitlines())
        shown = "".join(screen.split())
        assert "".join(words) in shown  # nothing cut, the long word folded


@needs_tmux
class TestHostileText:
    def test_escape_sequences_show_as_inert_text(self, daemon: ServerProcess, term: Tmux) -> None:
        """Clear-screen, colour and title sequences and Rich markup arrive as visible text."""
        join(term, daemon, "hana", "hostile")
        before = term.title("hana")
        send(daemon.address, "hostile", "mallory", "\x1b[2J\x1b[31mPWNED")
        send(daemon.address, "hostile", "mallory", "\x1b]0;title\x07 [bold red]x[/]")
        screen = settled(term, "hana", "[bold red]x[/]", "[hostile] hana>")
        assert "mallory: \\x1b[2J\\x1b[31mPWNED" in screen
        assert "mallory: \\x1b]0;title\\x07 [bold red]x[/]" in screen
        assert "joined hostile as hana" in screen  # the screen was not cleared
        assert term.title("hana") == before != "title"


@needs_tmux
class TestLeaving:
    def test_quit_ends_the_member_and_the_room(self, daemon: ServerProcess, term: Tmux) -> None:
        """/quit exits 0; the last member gone, the room no longer exists."""
        join(term, daemon, "ivan", "leaving")
        term.type("ivan", "/quit")
        term.keys("ivan", "Enter")
        assert term.wait_exit("ivan") == 0
        screen = term.screen("ivan")
        assert "left leaving" in screen
        assert "Traceback" not in screen
        wait_until_room_gone(daemon.address, "leaving")

    @pytest.mark.parametrize("key", ["C-d", "C-c"])
    def test_ctrl_d_and_ctrl_c_leave_without_a_traceback(
        self, daemon: ServerProcess, term: Tmux, key: str
    ) -> None:
        """Ctrl-D on an empty line and Ctrl-C (even mid-line) leave cleanly with exit 0."""
        room = f"keys-{key}"
        join(term, daemon, "judy", room)
        if key == "C-c":
            term.type("judy", "never sent")
        term.keys("judy", key)
        assert term.wait_exit("judy") == 0
        screen = term.screen("judy")
        assert "Traceback" not in screen
        assert f"left {room}" in screen
        wait_until_room_gone(daemon.address, room)


@needs_tmux
class TestServerTrouble:
    def test_no_server_gives_one_line_and_exit_3(self, term: Tmux) -> None:
        """With nothing listening on the port, one error line and exit status 3."""
        term.start("kim", ["--server", "127.0.0.1:1", "--room", "r", "--user", "kim"])
        assert term.wait_exit("kim") == 3
        assert term.transcript("kim") == [
            "hello-chat: error: cannot reach server 127.0.0.1:1: "
            "connection refused (is hello-server running there?)"
        ]

    def test_a_server_restart_is_reported_and_the_room_goes_on(self, term: Tmux) -> None:
        """Shutdown: "reconnecting…"; a new server on the port: "some messages may be missing"."""
        with server_process() as own:
            own.follow_log()
            port = own.address.rsplit(":", 1)[1]
            join(term, own, "leo", "again")
            own.signal(signal.SIGTERM)
            term.wait_for("leo", "reconnecting…")
            assert own.wait() == 0
        term.type("leo", "while away")
        term.keys("leo", "Enter")
        term.wait_for("leo", "not sent (disconnected")
        with server_process(["--port", port]) as back:
            term.wait_for("leo", "reconnected, some messages may be missing")
            send(back.address, "again", "bob", "welcome back")
            term.wait_for("leo", "bob: welcome back")
            term.type("leo", "/quit")
            term.keys("leo", "Enter")
            assert term.wait_exit("leo") == 0
        screen = term.screen("leo")
        assert "Traceback" not in screen
        assert "connection lost (server 127.0.0.1:" in screen

    def test_history_names_presence_and_who(self, daemon: ServerProcess, term: Tmux) -> None:
        """Earlier messages on join, names with ids, join/leave notices and /who."""
        room = "social"
        with listening(daemon.address, room, "anchor") as observer:
            send(daemon.address, room, "bob", "said before")
            assert observer.next_text() == "said before"
            term.start(
                "mia",
                ["--server", daemon.address, "--room", room, "--user", "mia", "--name", "Mia"],
            )
            term.wait_for("mia", "earlier messages:")
            term.wait_for("mia", "bob: said before")
            term.start(
                "nat",
                ["--server", daemon.address, "--room", room, "--user", "nat", "--name", "Nat King"],
            )
            term.wait_for("mia", "Nat King (nat) joined")
            term.type("nat", "hi all")
            term.keys("nat", "Enter")
            term.wait_for("mia", "Nat King (nat): hi all")
            term.wait_for("mia", "now:")
            term.type("mia", "/who")
            term.keys("mia", "Enter")
            term.wait_for("mia", f"in {room} (3): anchor, Mia (mia), Nat King (nat)")
            term.type("nat", "/quit")
            term.keys("nat", "Enter")
            assert term.wait_exit("nat") == 0
            term.wait_for("mia", "Nat King (nat) left")


# -- rendering, on consoles of a fixed width --------------------------------------


def _message(text: str, sender: str = "bob", seq: int = 7) -> ChatMessage:
    return ChatMessage(
        sender=sender,
        room="lobby",
        text=text,
        timestamp_ns=int(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()) * 10**9
        + 678_901_000,
        seq=seq,
    )


def _render(message: ChatMessage, width: int, me: str | None = None) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, markup=False, highlight=False)
    console.print(message_renderable(message, me=me, width=width))
    return out.getvalue().rstrip("\n").split("\n")


class TestRendering:
    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("\x1b[2J", "\\x1b[2J"),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            ("a\rb\x00c\x7fd", "a\\rb\\x00c\\x7fd"),
            ("csi \x9b2J", "csi \\x9b2J"),
            ("\u202eevil", "\\u202eevil"),
            ("line\nbreak", "line\\nbreak"),
            ("tab\tand é 👩‍💻", "tab\tand é 👩‍💻"),
        ],
    )
    def test_inert_shows_control_characters_as_escapes(self, raw: str, shown: str) -> None:
        """Controls, C1, DEL and bidi overrides become visible escapes; printable text stays."""
        assert inert(raw) == shown

    def test_received_text_is_never_rich_markup(self) -> None:
        """Markup-like text renders literally."""
        assert inert_text("[bold red]x[/] :smile:").plain == "[bold red]x[/] :smile:"
        assert _render(_message("[red]hi[/red]"), 80)[0].endswith("bob: [red]hi[/red]")

    def test_long_text_wraps_under_its_column(self) -> None:
        """Continuation lines are indented to the text column; no line exceeds the width."""
        lines = _render(_message("lorem ipsum dolor " * 6), 40)
        assert len(lines) > 1
        indent = lines[0].index("lorem")
        assert all(len(line) <= 40 for line in lines)
        assert all(line[:indent].strip() == "" for line in lines[1:])

    def test_a_narrow_terminal_flows_the_message_and_folds_long_words(self) -> None:
        """Too narrow for columns: one paragraph at full width, words longer than a line folded."""
        lines = _render(_message("short " + "y" * 50), 20)
        assert all(len(line) <= 20 for line in lines)
        assert "".join(lines).replace(" ", "").endswith("y" * 50)

    def test_own_messages_are_marked(self) -> None:
        """The sender's own messages carry "(you)"."""
        assert "bob (you): hi" in _render(_message("hi"), 80, me="bob")[0]
        assert "bob: hi" in _render(_message("hi"), 80, me="alice")[0]
        assert message_line(_message("hi"), me="bob").endswith("bob (you): hi")

    def test_user_colours_are_stable(self) -> None:
        """A user's colour depends only on the id (not on the run's hash seed)."""
        # Pinned: a change would recolour everyone between versions.
        assert (user_colour("alice"), user_colour("bob")) == ("#6c71c4", "#2aa198")
        assert user_colour("carol") in PALETTE
        assert len({user_colour(f"user{n}") for n in range(50)}) > 6

    def test_json_lines(self) -> None:
        """JSON has id, room, text, RFC 3339 timestamp, seq; terminal-unsafe characters escaped."""
        line = message_json(_message("hi \x9b\u202e \x1b", seq=0))
        assert "\x9b" not in line
        assert "\u202e" not in line
        assert json.loads(line) == {
            "id": "bob",
            "name": "",
            "room": "lobby",
            "text": "hi \x9b\u202e \x1b",
            "timestamp": "2025-01-02T03:04:05.678901Z",
            "seq": None,
        }
