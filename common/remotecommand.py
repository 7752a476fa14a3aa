"""The Kubernetes remote-command wire format (`v5.channel.k8s.io`, `v4.channel.k8s.io`).

As the kubelet and the API server speak it (apimachinery's httpstream/wsstream and
util/remotecommand, client-go's tools/remotecommand): every WebSocket message is binary, its
first byte the channel. Client to server: 0 stdin, 4 resize (a stream of JSON objects
`{"Width": w, "Height": h}`), and in v5 only 255 close, whose one-byte payload names the channel
being closed (`[255, 0]` is end of stdin). Server to client: 1 stdout, 2 stderr, and once at
the end 3 error: a `metav1.Status` in JSON (Success, or Failure with reason NonZeroExitCode and
the exit code as the message of a cause of type ExitCode). On connecting, the server sends an
empty message on the lowest channel it writes (stdout, else stderr, else error).

Pure functions and small dataclasses: the agent, the gateway and the clients all use them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLOSE",
    "ERROR",
    "MAX_COMMAND_ARGS",
    "MAX_ENV",
    "RESIZE",
    "SESSION_ID_PATTERN",
    "STDERR",
    "STDIN",
    "STDOUT",
    "SUBPROTOCOLS",
    "V4",
    "V5",
    "ExecOptions",
    "ExitStatus",
    "Frame",
    "InvalidExecQuery",
    "ProtocolError",
    "ResizeDecoder",
    "TerminalSize",
    "close_frame",
    "closed_channel",
    "data_frame",
    "decode_frame",
    "encode_exec_query",
    "exec_query_parameters",
    "exit_code_status",
    "failure_status",
    "first_channel",
    "parse_bool",
    "parse_exec_query",
    "parse_status",
    "resize_frame",
    "select_subprotocol",
    "status_payload",
]

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
# The v5 stream-close signal (apimachinery's remotecommand.StreamClose).
CLOSE = 255
# Channels a server opens for an exec: stdin, stdout, stderr, error, resize.
_CHANNELS = 5

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
# In the order a client offers them: v5 preferred (client-go offers v5 first, then v4).
SUBPROTOCOLS = (V5, V4)

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_COMMAND_ARGS = 4096
MAX_ENV = 256
_MAX_ARG_BYTES = 128 * 1024

# metav1.Status reasons and cause types of util/remotecommand.
_NON_ZERO_EXIT = "NonZeroExitCode"
_EXIT_CODE_CAUSE = "ExitCode"


class ProtocolError(ValueError):
    """A message that breaks the protocol (the server ends the connection)."""


class InvalidExecQuery(ValueError):
    """The exec query parameters are not acceptable; the message says which and why."""


# ----- frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """One message: the channel, and the bytes carried on it."""

    channel: int
    data: bytes


def data_frame(channel: int, data: bytes) -> bytes:
    """The message carrying `data` on `channel`."""
    return bytes((channel,)) + data


def close_frame(channel: int) -> bytes:
    """The v5 message that closes `channel` (half-close: `close_frame(STDIN)` is end of input)."""
    return bytes((CLOSE, channel))


def decode_frame(message: bytes) -> Frame | None:
    """The channel and payload of a message; None for an empty one (ignored, as the kubelet
    ignores it)."""
    if not message:
        return None
    return Frame(message[0], message[1:])


def closed_channel(frame: Frame) -> int:
    """The channel a v5 close signal closes; ProtocolError when it does not name exactly one
    of the exec's channels (the API server ends the connection then)."""
    if len(frame.data) != 1:
        raise ProtocolError(
            f"a close signal carries one channel byte, this one carries {len(frame.data)}"
        )
    channel = frame.data[0]
    if channel >= _CHANNELS:
        raise ProtocolError(f"a close signal for channel {channel}, which does not exist")
    return channel


def select_subprotocol(offered: Iterable[str]) -> str | None:
    """The first subprotocol the client offers that is spoken here (the client's order
    decides, as in apimachinery's wsstream handshake); None if none is."""
    for protocol in offered:
        if protocol.strip() in SUBPROTOCOLS:
            return protocol.strip()
    return None


def first_channel(stdout: bool, stderr: bool) -> int:
    """The channel of the empty message a server sends once connected: the lowest it writes."""
    if stdout:
        return STDOUT
    if stderr:
        return STDERR
    return ERROR


# ----- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a command ended: an exit code, or a failure without one (reason, message)."""

    exit_code: int | None
    reason: str = ""
    message: str = ""


def exit_code_status(code: int) -> dict[str, Any]:
    """The metav1.Status for an exit code, exactly as the API server writes it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: "
        f"command terminated with exit code {code}",
        "reason": _NON_ZERO_EXIT,
        "details": {"causes": [{"reason": _EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def failure_status(message: str, reason: str = "InternalError", code: int = 500) -> dict[str, Any]:
    """A metav1.Status for a failure that has no exit code (apierrors.NewInternalError's shape
    by default)."""
    if reason == "InternalError":
        return {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {message}",
            "reason": reason,
            "details": {"causes": [{"message": message}]},
            "code": code,
        }
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def status_payload(status: dict[str, Any]) -> bytes:
    """A Status as the bytes of the error channel (compact JSON, as Go's encoder writes it)."""
    return json.dumps(status, separators=(",", ":")).encode()


def parse_status(payload: bytes) -> ExitStatus:
    """The exit of a metav1.Status, as client-go's v4 error decoder reads it: Success is 0;
    Failure NonZeroExitCode with an ExitCode cause is that code; any other Failure has none."""
    try:
        status: Any = json.loads(payload)
    except ValueError:
        return ExitStatus(None, "InternalError", payload.decode(errors="replace"))
    if not isinstance(status, dict):
        return ExitStatus(None, "InternalError", str(status))
    if status.get("status") == "Success":
        return ExitStatus(0)
    reason, message = str(status.get("reason") or ""), str(status.get("message") or "")
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if reason == _NON_ZERO_EXIT and isinstance(causes, list):
        for cause in causes:
            if isinstance(cause, dict) and cause.get("reason") == _EXIT_CODE_CAUSE:
                text = str(cause.get("message", ""))
                if text.isdigit() and int(text) <= 255:
                    return ExitStatus(int(text), reason, message)
                return ExitStatus(None, "InternalError", f"invalid exit code value {text!r}")
    return ExitStatus(None, reason or "InternalError", message)


# ----- resize ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """A terminal's size in character cells."""

    width: int
    height: int


def resize_frame(width: int, height: int) -> bytes:
    """The message telling the server the terminal is now `width` columns by `height` rows."""
    return data_frame(RESIZE, json.dumps({"Width": width, "Height": height}).encode())


class ResizeDecoder:
    """Reads the resize channel as the API server does: a stream of JSON objects (one per
    message in practice, but a message may carry several or part of one). Field names match
    case-insensitively and values are uint16, as Go's decoder into TerminalSize takes them."""

    __slots__ = ("_buffer",)
    _LIMIT = 4096
    _decoder = json.JSONDecoder()

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, data: bytes) -> list[TerminalSize]:
        """The sizes completed by `data`; ProtocolError for anything but size objects (the
        buffer is then reset: later messages are read afresh)."""
        self._buffer += data.decode(errors="replace")
        sizes: list[TerminalSize] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return sizes
            try:
                value, end = self._decoder.raw_decode(text)
            except ValueError:
                if len(text) > self._LIMIT or not text.startswith("{"):
                    self._buffer = ""
                    raise ProtocolError(f"resize: not a JSON object: {text[:80]!r}") from None
                self._buffer = text  # part of an object: wait for the rest
                return sizes
            self._buffer = text[end:]
            sizes.append(_terminal_size(value))


def _terminal_size(value: Any) -> TerminalSize:
    if not isinstance(value, dict):
        raise ProtocolError(f"resize: {value!r} is not an object")
    fields = {str(k).lower(): v for k, v in value.items()}
    numbers = []
    for name in ("width", "height"):
        number = fields.get(name, 0)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 65535:
            raise ProtocolError(f"resize: {name} {number!r} is not an integer in 0..65535")
        numbers.append(number)
    return TerminalSize(numbers[0], numbers[1])


# ----- the exec query ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """What an exec asks for, from its query parameters (the kubelet's, plus tuxio's session
    and env). Defaults as PodExecOptions has them: stdout and stderr on, stdin and tty off."""

    command: tuple[str, ...] = ()
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    session: str | None = None
    env: tuple[tuple[str, str], ...] = field(default=())


_TRUE = {"true", "1", "t"}
_FALSE = {"false", "0", "f"}
_FLAGS = ("stdin", "stdout", "stderr", "tty")
# Parameters Kubernetes clients send that mean nothing here: a sandbox has one container.
_IGNORED = frozenset({"container"})


def parse_bool(name: str, value: str) -> bool:
    """A boolean query parameter: true/false/1/0/t/f in any case (what Go's ParseBool and the
    API server's conversion both accept); InvalidExecQuery otherwise."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidExecQuery(f"{name}={value!r}: expected true or false")


def parse_exec_query(params: Sequence[tuple[str, str]]) -> ExecOptions:
    """ExecOptions from the query's (name, value) pairs, in order; InvalidExecQuery when one is
    unknown, repeated where it may not be, or not well-formed, or when the whole makes no
    sense (no stream at all, a session without a terminal, no command without a terminal)."""
    command: list[str] = []
    env: dict[str, str] = {}
    flags: dict[str, bool] = {}
    session: str | None = None
    for name, value in params:
        if name == "command":
            command.append(_argument(value, len(command)))
        elif name in _FLAGS:
            if name in flags:
                raise InvalidExecQuery(f"{name} is given more than once")
            flags[name] = parse_bool(name, value)
        elif name == "session":
            if session is not None:
                raise InvalidExecQuery("session is given more than once")
            if _SESSION_ID.match(value) is None:
                raise InvalidExecQuery(
                    f"session {value[:40]!r} is not 8 to 128 letters, digits, '-' or '_'"
                )
            session = value
        elif name == "env":
            key, value_ = _variable(value)
            env[key] = value_
            if len(env) > MAX_ENV:
                raise InvalidExecQuery(f"at most {MAX_ENV} env variables")
        elif name not in _IGNORED:
            raise InvalidExecQuery(f"unknown query parameter {name!r}")
    if len(command) > MAX_COMMAND_ARGS:
        raise InvalidExecQuery(f"at most {MAX_COMMAND_ARGS} command arguments")
    options = ExecOptions(
        command=tuple(command),
        stdin=flags.get("stdin", False),
        stdout=flags.get("stdout", True),
        stderr=flags.get("stderr", True),
        tty=flags.get("tty", False),
        session=session,
        env=tuple(env.items()),
    )
    return _coherent(options)


def exec_query_parameters(*, terminal: bool = False) -> list[dict[str, Any]]:
    """The query of an exec (or, with `terminal`, of a terminal: no stream flags, the TTY is
    implied) as OpenAPI 3 parameters, for the documents of the routes that take it."""
    flags = [
        {
            "name": flag,
            "in": "query",
            "required": False,
            "description": f"Open {flag}" + (" (a terminal)" if flag == "tty" else "") + ".",
            "schema": {"type": "boolean"},
        }
        for flag in _FLAGS
    ]
    rest = [
        {
            "name": "command",
            "in": "query",
            "required": False,
            "description": "The argv, one argument per repetition (a terminal defaults to the "
            "container's login shell).",
            "schema": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_COMMAND_ARGS},
            "style": "form",
            "explode": True,
        },
        {
            "name": "session",
            "in": "query",
            "required": False,
            "description": "A terminal session to resume or to create under this id.",
            "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
        },
        {
            "name": "env",
            "in": "query",
            "required": False,
            "description": "NAME=value for the command's environment, one per repetition.",
            "schema": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_ENV},
            "style": "form",
            "explode": True,
        },
    ]
    return rest if terminal else [*flags, *rest]


def _coherent(options: ExecOptions) -> ExecOptions:
    if options.tty and options.stderr:
        # A terminal has one output: the kubelet drops stderr when tty is set, so do we.
        options = ExecOptions(
            options.command,
            options.stdin,
            options.stdout,
            False,
            options.tty,
            options.session,
            options.env,
        )
    if not (options.stdin or options.stdout or options.stderr):
        raise InvalidExecQuery("you must specify at least 1 of stdin, stdout, stderr")
    if options.session is not None and not options.tty:
        raise InvalidExecQuery("session needs tty=true: only terminals outlive a connection")
    if not options.command and not options.tty:
        raise InvalidExecQuery("command is required (repeat it for each argument)")
    return options


def _argument(value: str, index: int) -> str:
    if "\x00" in value:
        raise InvalidExecQuery(f"command argument {index} contains a NUL byte")
    if index == 0 and not value:
        raise InvalidExecQuery("the first command argument must name a program")
    if len(value.encode()) > _MAX_ARG_BYTES:
        raise InvalidExecQuery(f"command argument {index} is longer than {_MAX_ARG_BYTES} bytes")
    return value


def _variable(value: str) -> tuple[str, str]:
    key, sep, rest = value.partition("=")
    if not sep or _ENV_NAME.match(key) is None:
        raise InvalidExecQuery(f"env {value[:40]!r} is not NAME=value with a valid NAME")
    if "\x00" in rest:
        raise InvalidExecQuery(f"env {key} contains a NUL byte")
    return key, rest


def encode_exec_query(options: ExecOptions) -> list[tuple[str, str]]:
    """The query parameters for `options` (the inverse of parse_exec_query)."""
    params = [("command", arg) for arg in options.command]
    params += [
        ("stdin", _flag(options.stdin)),
        ("stdout", _flag(options.stdout)),
        ("stderr", _flag(options.stderr)),
        ("tty", _flag(options.tty)),
    ]
    if options.session is not None:
        params.append(("session", options.session))
    params += [("env", f"{key}={value}") for key, value in options.env]
    return params


def _flag(value: bool) -> str:
    return "true" if value else "false"
