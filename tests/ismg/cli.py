"""The ISMG simulator's command line: `IsmgOptions` ⇄ arguments, both ways, so the parent
of a subprocess (`tests.ismg.process`) and the child (`python -m tests.ismg`) agree."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from smsgw.carriers.cmpp.codec import CmppVersion

from .server import IsmgOptions

_VERSIONS = {version.label: version for version in CmppVersion}
# IsmgOptions fields given as plain --flag VALUE, with their types.
_SCALARS: dict[str, type] = {
    "host": str,
    "port": int,
    "gateway_id": int,
    "window": int,
    "tps": float,
    "latency": float,
    "report_delay": float,
    "report_stat": str,
    "deliver_window": int,
    "deliver_timeout": float,
    "deliver_retry": float,
    "max_deliver_attempts": int,
    "active_test": float,
    "login_timeout": float,
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _account(text: str) -> tuple[str, str]:
    sp_id, sep, secret = text.partition(":")
    if not sep or not sp_id:
        raise argparse.ArgumentTypeError(f"an account is SP_ID:SECRET, not {text!r}")
    return sp_id, secret


def _versions(text: str) -> frozenset[CmppVersion]:
    try:
        return frozenset(_VERSIONS[label] for label in text.split(","))
    except KeyError:
        raise argparse.ArgumentTypeError(f"versions are 2.0 and/or 3.0, not {text!r}") from None


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.ismg",
        description="A CMPP 2.0/3.0 ISMG simulator. stdout: one JSON event per line, first "
        '{"event": "listening", "port": N}; stdin: one JSON command per line, each answered '
        'by a {"event": "reply", "id": ...} line (see tests/ismg/server.py).',
    )
    defaults = IsmgOptions()
    for name, kind in _SCALARS.items():
        parser.add_argument(_flag(name), dest=name, type=kind, default=getattr(defaults, name))
    parser.add_argument(
        "--account",
        dest="accounts",
        type=_account,
        action="append",
        help="SP_ID:SECRET, repeatable (default 901234:secret)",
    )
    parser.add_argument(
        "--versions", type=_versions, default=defaults.versions, help="e.g. 2.0,3.0"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-PDU events")
    parser.add_argument("--no-stdin", action="store_true", help="run until SIGTERM/SIGINT")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[IsmgOptions, bool]:
    """The options, and whether stdin is the control channel."""
    namespace = parser().parse_args(argv)
    fields: dict[str, Any] = {name: getattr(namespace, name) for name in _SCALARS}
    if namespace.accounts:
        fields["accounts"] = dict(namespace.accounts)
    try:
        options = IsmgOptions(**fields, versions=namespace.versions, quiet=namespace.quiet)
    except (TypeError, ValueError) as exc:
        parser().error(str(exc))
    return options, not namespace.no_stdin


def to_args(options: IsmgOptions) -> list[str]:
    """The arguments that `parse_args` turns back into ``options``."""
    if options.port is None:
        raise ValueError("a subprocess ISMG listens on a port")
    args: list[str] = []
    for name in _SCALARS:
        args += [_flag(name), str(getattr(options, name))]
    for sp_id, secret in options.accounts.items():
        args += ["--account", f"{sp_id}:{secret}"]
    args += ["--versions", ",".join(sorted(version.label for version in options.versions))]
    if options.quiet:
        args.append("--quiet")
    return args
