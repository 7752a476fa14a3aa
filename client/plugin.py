"""`kubectl tuxio`: the kubectl plugin (installed with the package as `kubectl-tuxio`; kubectl
runs it for `kubectl tuxio ...`). With the user's kubeconfig and kubectl's conventions
(`-n/--namespace`, `--context`, `--kubeconfig`, anywhere on the line):

    kubectl tuxio shell SANDBOX [--session ID] [-- COMMAND ...]
    kubectl tuxio exec SANDBOX [-i] -- COMMAND [ARG ...]
    kubectl tuxio cp SRC DST            (one of them [NAMESPACE/]SANDBOX:/path)
    kubectl tuxio token SANDBOX [--scope terminal] [--duration 600] [-o json]

The exit code is the command's (shell and exec); 1 for an error, with kubectl's `error: ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from .aclient import AsyncClient
from .api import SCOPES
from .console import run_exec, run_shell
from .errors import SandboxError, SandboxInvalid
from .transfer import RemotePath, copy_from, copy_to, parse_location

__all__ = ["main", "parse", "parser"]

_ERROR = 1


def _common(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """kubectl's flags; a subcommand's copy leaves the main parser's values alone."""
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument("-n", "--namespace", default=default, help="the Sandbox's namespace")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("--kubeconfig", default=default, help="the kubeconfig file to use")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="kubectl tuxio", description="Into tuxio sandboxes: shells, commands, files."
    )
    _common(main, defaults=True)
    commands = main.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    shell = commands.add_parser("shell", help="an interactive terminal in a sandbox")
    _common(shell, defaults=False)
    shell.add_argument("sandbox")
    shell.add_argument("--session", help="resume this terminal session (its id)")
    shell.add_argument("command", nargs="*", help="what to run (default: the login shell)")

    run = commands.add_parser("exec", help="run a command in a sandbox")
    _common(run, defaults=False)
    run.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    run.add_argument("sandbox")
    run.add_argument("command", nargs="*", help="the program and its arguments (after --)")

    cp = commands.add_parser("cp", help="copy files to or from a sandbox")
    _common(cp, defaults=False)
    cp.add_argument("source", help="a local path, - (stdin), or [NAMESPACE/]SANDBOX:/path")
    cp.add_argument("destination", help="a local path, - (stdout), or [NAMESPACE/]SANDBOX:/path")

    token = commands.add_parser("token", help="mint a visitor token for a sandbox")
    _common(token, defaults=False)
    token.add_argument("sandbox")
    token.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="what the token opens (repeat it; default: terminal)",
    )
    token.add_argument("--duration", type=int, help="seconds it is valid (the gateway's default)")
    token.add_argument("-o", "--output", choices=("token", "json"), default="token")
    return main


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line; what follows the first `--` is the command, whatever it looks like
    (argparse alone would mistake its options for the plugin's)."""
    argv = list(argv)
    tail: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, tail = argv[:at], argv[at + 1 :]
    main = parser()
    args = main.parse_args(argv)
    if args.verb in ("shell", "exec"):
        args.command = [*args.command, *tail]
    elif tail:
        main.error(f"{args.verb} takes no command after --")
    if args.verb == "exec" and not args.command:
        main.error("exec needs a command: kubectl tuxio exec SANDBOX -- COMMAND [ARG ...]")
    return args


async def _shell(tux: AsyncClient, args: argparse.Namespace) -> int:
    sandbox = await tux.get(args.sandbox)
    code, terminal = await run_shell(sandbox, session=args.session, command=args.command)
    if code is None:
        again = f"kubectl tuxio shell {sandbox.name} -n {sandbox.namespace}"
        print(
            f"\r\nconnection closed; the session lives on for a while: "
            f"{again} --session {terminal.session_id}",
            file=sys.stderr,
        )
        return _ERROR
    return code


async def _exec(tux: AsyncClient, args: argparse.Namespace) -> int:
    sandbox = await tux.get(args.sandbox)
    return await run_exec(sandbox, args.command, stdin=args.stdin)


async def _cp(tux: AsyncClient, args: argparse.Namespace) -> int:
    source, destination = parse_location(args.source), parse_location(args.destination)
    if isinstance(source, RemotePath) == isinstance(destination, RemotePath):
        raise SandboxInvalid("one of source and destination is a sandbox path, the other local")
    if isinstance(source, RemotePath):
        assert isinstance(destination, str)
        sandbox = await tux.get(source.name, source.namespace)
        await copy_from(sandbox, source.path, destination)
    else:
        assert isinstance(destination, RemotePath)
        sandbox = await tux.get(destination.name, destination.namespace)
        await copy_to(sandbox, source, destination.path)
    return 0


async def _token(tux: AsyncClient, args: argparse.Namespace) -> int:
    sandbox = await tux.get(args.sandbox)
    token = await sandbox.token(args.scope or ["terminal"], args.duration)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "token": token.token,
                    "expirationTimestamp": token.expires_at.isoformat().replace("+00:00", "Z"),
                    "namespace": token.namespace,
                    "name": token.name,
                    "uid": token.uid,
                    "scopes": list(token.scopes),
                },
                indent=2,
            )
        )
    else:
        print(token.token)
    return 0


_VERBS = {"shell": _shell, "exec": _exec, "cp": _cp, "token": _token}


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient(args.kubeconfig, args.context, args.namespace) as tux:
        return await _VERBS[args.verb](tux, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(run(args))
    except SandboxError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return _ERROR
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
