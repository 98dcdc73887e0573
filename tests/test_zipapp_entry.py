"""The zipapp's `__main__` (smsgw/zipapp.py), as functions: the Python version check and the
choice of where shiv unpacks. tests/e2e/test_zipapp.py runs the built zipapp itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smsgw.zipapp import UnpackError, private_temp_dir, python_problem, unpack_root


def test_an_old_python_gets_one_line_naming_the_version_needed() -> None:
    assert python_problem((3, 10, 13), "/usr/bin/python3") == (
        "smsgw needs Python 3.11 or newer; /usr/bin/python3 is Python 3.10.13"
    )
    assert python_problem((2, 7, 18), "python") is not None
    assert python_problem((3, 11, 0), "python3") is None
    assert python_problem((3, 13, 1), "python3") is None
    assert python_problem((4, 0, 0), "python4") is None


def directory(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def read_only_home(tmp_path: Path) -> Path:
    home = directory(tmp_path / "home", 0o555)
    if os.access(home, os.W_OK):  # root writes anywhere: a home that does not exist then
        return tmp_path / "nonexistent"
    return home


def test_shiv_root_when_set_wins(tmp_path: Path) -> None:
    home = directory(tmp_path / "home")
    chosen = unpack_root({"SHIV_ROOT": "/opt/unpack"}, str(home), os.getuid())
    assert chosen == "/opt/unpack"


def test_a_writable_home_keeps_shivs_default(tmp_path: Path) -> None:
    home = directory(tmp_path / "home")
    env = {"CACHE_DIRECTORY": str(directory(tmp_path / "cache"))}
    assert unpack_root(env, str(home), os.getuid()) == str(home / ".shiv")
    assert not (home / ".shiv").exists()  # shiv makes it


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of the test's own as `tempfile.gettempdir()`."""
    tmp = directory(tmp_path / "tmp", 0o1777)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() caches its first answer
    return tmp


def test_without_a_writable_home_systemds_and_xdgs_directories_are_next(
    tmp_path: Path, tmp: Path
) -> None:
    home = str(read_only_home(tmp_path))
    cache, state = directory(tmp_path / "cache"), directory(tmp_path / "state")
    env = {"CACHE_DIRECTORY": f"{cache}:/var/cache/other", "STATE_DIRECTORY": str(state)}
    assert unpack_root(env, home, os.getuid()) == str(cache / "shiv")
    assert unpack_root({"STATE_DIRECTORY": str(state)}, home, os.getuid()) == str(state / "shiv")
    xdg = {"XDG_CACHE_HOME": str(directory(tmp_path / "xdg")), **env}
    assert unpack_root(xdg, home, os.getuid()) == str(tmp_path / "xdg" / "shiv")
    relative = {"CACHE_DIRECTORY": "cache", "STATE_DIRECTORY": str(tmp_path / "missing")}
    temp = unpack_root(relative, "~", os.getuid())  # no home at all: `~` stays unexpanded
    assert temp == str(tmp / f"smsgw-{os.getuid()}")


def test_last_a_private_directory_in_the_temporary_directory(tmp_path: Path, tmp: Path) -> None:
    chosen = unpack_root({}, str(read_only_home(tmp_path)), os.getuid())
    assert chosen == str(tmp / f"smsgw-{os.getuid()}")
    info = os.lstat(chosen)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert private_temp_dir(str(tmp), os.getuid()) == chosen  # the second run reuses it


def test_a_temporary_directory_someone_else_could_have_made_is_refused(
    tmp_path: Path, tmp: Path
) -> None:
    me = os.getuid()
    other = me + 1  # a directory this test makes is one that `other` does not own
    directory(tmp / f"smsgw-{other}", 0o700)
    directory(tmp / f"smsgw-{me}", 0o755)  # ours, but open to others
    cases = {other: "is not a directory of this user", me: "only it can use (mode 0700)"}
    for uid, reason in cases.items():
        with pytest.raises(UnpackError, match=r"remove it, or set SHIV_ROOT") as caught:
            private_temp_dir(str(tmp), uid)
        assert reason in str(caught.value)
    (tmp / f"smsgw-{me}").rmdir()
    (tmp / f"smsgw-{me}").symlink_to(directory(tmp_path / "elsewhere", 0o700))
    with pytest.raises(UnpackError):
        private_temp_dir(str(tmp), me)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_nowhere_writable_is_one_line_naming_shiv_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_temp_dir() -> str:
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr("tempfile.gettempdir", no_temp_dir)
    with pytest.raises(UnpackError, match=r"^no directory to unpack into; set SHIV_ROOT to"):
        unpack_root({}, str(read_only_home(tmp_path)), os.getuid())
