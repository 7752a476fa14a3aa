"""The remote-command wire format: frames, statuses, resizes and the exec query, exactly as the
API server and client-go write and read them."""

from __future__ import annotations

import json

import pytest

from tuxio.common import remotecommand as rc


def test_channel_numbers_and_names() -> None:
    assert (rc.STDIN, rc.STDOUT, rc.STDERR, rc.ERROR, rc.RESIZE, rc.CLOSE) == (0, 1, 2, 3, 4, 255)
    assert rc.SUBPROTOCOLS == ("v5.channel.k8s.io", "v4.channel.k8s.io")


def test_frames_round_trip() -> None:
    assert rc.data_frame(rc.STDIN, b"ls\n") == b"\x00ls\n"
    assert rc.decode_frame(b"\x01hello") == rc.Frame(1, b"hello")
    assert rc.decode_frame(b"\x02") == rc.Frame(2, b"")
    assert rc.decode_frame(b"") is None
    assert rc.close_frame(rc.STDIN) == b"\xff\x00"


@pytest.mark.parametrize(
    ("message", "channel"),
    [(b"\xff\x00", 0), (b"\xff\x04", 4)],
)
def test_close_names_one_channel(message: bytes, channel: int) -> None:
    frame = rc.decode_frame(message)
    assert frame is not None
    assert rc.closed_channel(frame) == channel


@pytest.mark.parametrize("message", [b"\xff", b"\xff\x00\x01", b"\xff\x05", b"\xff\xff"])
def test_malformed_close_is_a_protocol_error(message: bytes) -> None:
    frame = rc.decode_frame(message)
    assert frame is not None
    with pytest.raises(rc.ProtocolError):
        rc.closed_channel(frame)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["v5.channel.k8s.io", "v4.channel.k8s.io"], "v5.channel.k8s.io"),
        (["v4.channel.k8s.io", "v5.channel.k8s.io"], "v4.channel.k8s.io"),
        (["base64url.bearer.authorization.k8s.io.abc", " v5.channel.k8s.io"], "v5.channel.k8s.io"),
        (["channel.k8s.io", "v4.base64.channel.k8s.io"], None),
        ([], None),
    ],
)
def test_subprotocol_is_the_clients_first_spoken_one(offered: list[str], chosen: str) -> None:
    assert rc.select_subprotocol(offered) == chosen


@pytest.mark.parametrize(
    ("stdout", "stderr", "channel"),
    [(True, True, 1), (True, False, 1), (False, True, 2), (False, False, 3)],
)
def test_first_empty_message_goes_to_the_lowest_written_channel(
    stdout: bool, stderr: bool, channel: int
) -> None:
    assert rc.first_channel(stdout, stderr) == channel


def test_success_status_is_what_the_api_server_writes() -> None:
    assert rc.status_payload(rc.exit_code_status(0)) == b'{"metadata":{},"status":"Success"}'


def test_non_zero_exit_status_is_what_the_api_server_writes() -> None:
    assert rc.status_payload(rc.exit_code_status(7)) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b'code: command terminated with exit code 7","reason":"NonZeroExitCode","details":'
        b'{"causes":[{"reason":"ExitCode","message":"7"}]}}'
    )


def test_internal_error_status_has_apierrors_shape() -> None:
    assert rc.failure_status("no such container") == {
        "metadata": {},
        "status": "Failure",
        "message": "Internal error occurred: no such container",
        "reason": "InternalError",
        "details": {"causes": [{"message": "no such container"}]},
        "code": 500,
    }


@pytest.mark.parametrize("code", [0, 1, 7, 127, 137, 255])
def test_status_round_trips(code: int) -> None:
    parsed = rc.parse_status(rc.status_payload(rc.exit_code_status(code)))
    assert parsed.exit_code == code


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"not json", rc.ExitStatus(None, "InternalError", "not json")),
        (b"[]", rc.ExitStatus(None, "InternalError", "[]")),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}',
            rc.ExitStatus(None, "InternalError", "invalid exit code value 'x'"),
        ),
        (
            b'{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"256"}]}}',
            rc.ExitStatus(None, "InternalError", "invalid exit code value '256'"),
        ),
        (
            b'{"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError"}',
            rc.ExitStatus(None, "InternalError", "Internal error occurred: boom"),
        ),
        (b'{"status":"Failure","message":"gone"}', rc.ExitStatus(None, "InternalError", "gone")),
    ],
)
def test_statuses_without_an_exit_code(payload: bytes, expected: rc.ExitStatus) -> None:
    assert rc.parse_status(payload) == expected


def test_resize_frame() -> None:
    frame = rc.resize_frame(120, 40)
    assert frame[0] == rc.RESIZE
    assert json.loads(frame[1:]) == {"Width": 120, "Height": 40}


@pytest.mark.parametrize(
    ("chunks", "sizes"),
    [
        ([b'{"Width":80,"Height":24}'], [(80, 24)]),
        ([b'{"width":80,"height":24}'], [(80, 24)]),  # Go matches field names in any case
        ([b'{"Width":80,"Height":24}{"Width":100,"Height":30}'], [(80, 24), (100, 30)]),
        ([b'{"Width":8', b'0,"Height":24}'], [(80, 24)]),
        ([b'{"Height":24}'], [(0, 24)]),
        ([b' {"Width":1,"Height":2}\n'], [(1, 2)]),
    ],
)
def test_resize_stream(chunks: list[bytes], sizes: list[tuple[int, int]]) -> None:
    decoder = rc.ResizeDecoder()
    got = [size for chunk in chunks for size in decoder.feed(chunk)]
    assert got == [rc.TerminalSize(w, h) for w, h in sizes]


@pytest.mark.parametrize(
    "payload",
    [b"[80, 24]", b'{"Width":-1,"Height":2}', b'{"Width":70000}', b'{"Width":"80"}', b"nonsense"],
)
def test_bad_resizes_are_protocol_errors_and_do_not_poison_the_stream(payload: bytes) -> None:
    decoder = rc.ResizeDecoder()
    with pytest.raises(rc.ProtocolError):
        decoder.feed(payload)
    assert decoder.feed(b'{"Width":80,"Height":24}') == [rc.TerminalSize(80, 24)]


def test_exec_query_defaults_are_pod_exec_options() -> None:
    options = rc.parse_exec_query([("command", "ls"), ("command", "-l")])
    assert options == rc.ExecOptions(command=("ls", "-l"), stdout=True, stderr=True)


def test_exec_query_full() -> None:
    params = [
        ("command", "sh"),
        ("command", "-c"),
        ("command", "echo $A"),
        ("stdin", "1"),
        ("stdout", "True"),
        ("stderr", "false"),
        ("tty", "0"),
        ("env", "A=b=c"),
        ("env", "EMPTY="),
        ("container", "ignored"),
    ]
    options = rc.parse_exec_query(params)
    assert options.command == ("sh", "-c", "echo $A")
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        True,
        True,
        False,
        False,
    )
    assert options.env == (("A", "b=c"), ("EMPTY", ""))


def test_terminal_drops_stderr_and_may_omit_the_command() -> None:
    options = rc.parse_exec_query([("tty", "true"), ("stdin", "true"), ("session", "a" * 32)])
    assert options.tty and options.stdin and options.stdout
    assert options.stderr is False
    assert options.command == ()
    assert options.session == "a" * 32


def test_encode_is_the_inverse_of_parse() -> None:
    options = rc.ExecOptions(
        command=("cat",),
        stdin=True,
        stdout=True,
        stderr=False,
        tty=True,
        session="s" * 8,
        env=(("TERM", "xterm"),),
    )
    assert rc.parse_exec_query(rc.encode_exec_query(options)) == options


BAD_QUERIES = [
    ("no command", [("stdin", "true")], "command is required"),
    ("empty program", [("command", "")], "name a program"),
    ("nul in argument", [("command", "ls"), ("command", "a\x00b")], "NUL"),
    ("bad boolean", [("command", "ls"), ("stdin", "yes")], "stdin='yes'"),
    ("flag twice", [("command", "ls"), ("tty", "1"), ("tty", "0")], "more than once"),
    ("no stream", [("command", "ls"), ("stdout", "0"), ("stderr", "0")], "at least 1"),
    ("session without tty", [("command", "sh"), ("session", "a" * 16)], "needs tty"),
    ("short session", [("tty", "1"), ("session", "abc")], "8 to 128"),
    ("session with slash", [("tty", "1"), ("session", "abcdefgh/")], "8 to 128"),
    ("session twice", [("tty", "1"), ("session", "a" * 8), ("session", "b" * 8)], "more than once"),
    ("env without =", [("command", "ls"), ("env", "NOVALUE")], "NAME=value"),
    ("env bad name", [("command", "ls"), ("env", "1A=b")], "NAME=value"),
    ("unknown parameter", [("command", "ls"), ("commmand", "x")], "unknown query parameter"),
    ("too many env", [("command", "ls")] + [("env", f"V{i}=x") for i in range(257)], "at most 256"),
]


@pytest.mark.parametrize(
    ("params", "message"), [(p, m) for _, p, m in BAD_QUERIES], ids=[w for w, _, _ in BAD_QUERIES]
)
def test_bad_exec_queries(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(rc.InvalidExecQuery, match=message):
        rc.parse_exec_query(params)
