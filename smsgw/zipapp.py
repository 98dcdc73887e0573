"""The zipapp's `__main__`: `tools/build_zipapp.py` puts this file at the root of
dist/smsgw.pyz in place of shiv's own two lines. Before shiv's bootstrap runs it

- checks the Python version, so an old Python gets one line instead of a traceback ending in
  `module 'smsgw' has no attribute 'cli'`;
- chooses where shiv unpacks the bundled packages (`SHIV_ROOT`), so a service user whose home
  is missing or read-only (`HOME=/nonexistent`, systemd `DynamicUser=`, a read-only container)
  starts with nothing set by hand.

It runs before anything is unpacked, so it uses the standard library only and keeps to
syntax Python 3.7 still parses (the version check must get to run there).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Mapping

REQUIRED_PYTHON = (3, 11)
ROOT_VARIABLE = "SHIV_ROOT"
# Directories systemd makes for a unit (CacheDirectory=, StateDirectory=) and the user's
# cache, in the order tried once ~/.shiv cannot be written. systemd may list several,
# separated by colons: the first is taken.
ROOT_PARENTS = ("XDG_CACHE_HOME", "CACHE_DIRECTORY", "STATE_DIRECTORY")


class UnpackError(Exception):
    """No safe place to unpack; `str()` is the line to print."""


def python_problem(version: tuple[int, int, int], executable: str) -> str | None:
    """The one line to print when this Python (`sys.version_info[:3]`) is too old to run
    smsgw, else None."""
    if version[:2] >= REQUIRED_PYTHON:
        return None
    found = ".".join(str(part) for part in version)
    needed = ".".join(str(part) for part in REQUIRED_PYTHON)
    return f"smsgw needs Python {needed} or newer; {executable} is Python {found}"


def unpack_root(environ: Mapping[str, str], home: str, uid: int) -> str:
    """Where shiv should unpack: `$SHIV_ROOT` when set; else `~/.shiv` when it can be
    written; else `shiv` under the first of `ROOT_PARENTS` that can be; else a directory of
    this user's own in the temporary directory (`$TMPDIR`, else /tmp)."""
    chosen = environ.get(ROOT_VARIABLE, "")
    if chosen:
        return chosen
    if os.path.isabs(home):
        default = os.path.join(home, ".shiv")
        if _writable(default) or (not os.path.lexists(default) and _writable(home)):
            return default
    for variable in ROOT_PARENTS:
        parent = environ.get(variable, "").split(":")[0]
        if os.path.isabs(parent) and _writable(parent):
            return os.path.join(parent, "shiv")
    try:
        tmp = tempfile.gettempdir()
    except OSError:  # not one of $TMPDIR, /tmp, /var/tmp, /usr/tmp or the cwd is writable
        raise UnpackError(f"no directory to unpack into; {_choose}") from None
    return private_temp_dir(tmp, uid)


def private_temp_dir(tmp: str, uid: int) -> str:
    """`<tmp>/smsgw-<uid>`, created 0700. One that already exists must be a directory (not a
    link) of this user that no one else can write: anyone can create names in a shared
    temporary directory, and code unpacked there is code that runs."""
    path = os.path.join(tmp, f"smsgw-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnpackError(f"cannot create {path}: {exc.strerror}; {_choose}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise UnpackError(
            f"{path} is not a directory of this user (uid {uid}) that only it can use (mode 0700); "
            f"remove it, or {_choose}"
        )
    return path


_choose = f"set {ROOT_VARIABLE} to a directory this user can write"


def _writable(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def main() -> None:
    problem = python_problem(sys.version_info[:3], sys.executable)
    if problem is not None:
        sys.exit(problem)
    try:
        root = unpack_root(os.environ, os.path.expanduser("~"), os.getuid())
    except UnpackError as exc:
        sys.exit(f"smsgw: cannot unpack: {exc}")
    os.environ[ROOT_VARIABLE] = root
    # Present only inside the zipapp, where shiv puts it beside this file.
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.bootstrap()


if __name__ == "__main__":
    main()
